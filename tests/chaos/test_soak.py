"""The soak's short form: kills and model swaps for 40 s under load, held to issue 15's targets
(``mlcloud chaos`` runs the 10-minute form; docs/reliability.md has its figures)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mlcloud.chaos import ChaosRun, SoakOptions, UpProcess, soak
from mlcloud.chaos.cli import chaos_command, render

pytestmark = pytest.mark.slow

SLACK = 1.0  # seconds added to each time bound: other test runs share these 2 cores


@pytest.mark.timeout(300)  # 40 s of soak, after a start-up and a scale that a busy machine stretches
async def test_a_short_soak_loses_only_requests_in_flight_and_leaks_nothing(up: UpProcess) -> None:
    # Kills at 10, 16, 22 and 28 s, swaps at 5, 15, 25 and 35 s: never at once.
    options = SoakOptions(duration=40, kill_every=6, swap_every=10, warmup=10, process_warmup=10,
                          replicas=2, seed=15)
    async with ChaosRun(up, seed=options.seed) as run:
        await run.scale_actors(2)  # lone actors' kills are test_kills' (their time bound needs more slack)
        report = await soak(run, options)
    print(render(report, run.started))
    assert len(report.kills) >= 4 and len(report.swaps) >= 3
    assert report.growth, "no process lived long enough to compare its RSS and fds"
    assert not report.misses(SLACK), render(report, run.started)


def test_chaos_refuses_targets_it_does_not_know() -> None:
    result = CliRunner().invoke(chaos_command, ["--targets", "api,washboard"])
    assert result.exit_code == 2 and "expected some of api, preprocess" in result.output
