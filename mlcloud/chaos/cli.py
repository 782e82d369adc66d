"""``mlcloud chaos``: the soak as a click command (registered by mlcloud.cli), and its tables."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
import msgspec

from mlcloud.chaos.measures import Growth, Kill, Report, Samples, fmt
from mlcloud.chaos.run import CONCURRENCY, SoakOptions, chaos_system, soak
from mlcloud.chaos.system import TARGETS


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def kills_table(kills: list[Kill], started: float = 0.0) -> str:
    rows = [[
        f"{k.at - started:.0f}", k.target, str(k.replicas), str(k.in_flight),
        str(k.failures) + (" (" + ", ".join(f"{n}×{s or 'conn'}" for s, n in sorted(k.failed.items())) + ")"
                           if k.failed else ""),
        fmt(k.longest_gap), fmt(k.serving_again), fmt(k.back_after), fmt(k.load_time),
        "; ".join(k.misses()) or "met",
    ] for k in kills]
    return table(rows, ["at s", "killed", "instances", "in flight", "failed (by status)",
                        "longest without success s", "serving again s", "replaced s", "model load s",
                        "targets"])


def growth_table(growth: list[Growth]) -> str:
    rows = [[g.target, str(g.pid), f"{g.span:.0f}", f"{g.rss_first / 2**20:.1f}", f"{g.rss_last / 2**20:.1f}",
             f"{g.rss_change:+.1%}", str(g.fds_first), str(g.fds_last)] for g in growth]
    return table(rows, ["process", "pid", "compared over s", "RSS first MiB", "RSS last MiB", "change",
                        "fds usually, first half", "fds fewest, second half"])


def render(report: Report, started: float = 0.0) -> str:
    lost = sum(k.failures for k in report.kills) + sum(report.failed_outside_kills.values())
    swaps = [s.took for s in report.swaps if s.took is not None]
    parts = [
        kills_table(report.kills, started), "",
        growth_table(report.growth), "",
        f"{report.requests} requests in {report.duration:.0f} s, {report.successes} succeeded, {lost} failed "
        f"({sum(report.failed_outside_kills.values())} outside any kill's window); {len(report.swaps)} swaps"
        + (f", longest {max(swaps):.2f} s" if swaps else ""),
    ]
    missed = report.misses()
    parts.append("every target met" if not missed else "targets missed:\n  " + "\n  ".join(missed))
    return "\n".join(parts)


def _targets(text: str) -> tuple[str, ...]:
    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown or not chosen:
        raise click.BadParameter(f"expected some of {', '.join(TARGETS)}; got {text!r}")
    return chosen


@click.command("chaos")
@click.option("--duration", type=float, default=SoakOptions.duration, show_default=True,
              help="Seconds, warm-up included.")
@click.option("--kill-every", type=float, default=SoakOptions.kill_every, show_default=True,
              help="Seconds between SIGKILLs.")
@click.option("--swap-every", type=float, default=SoakOptions.swap_every, show_default=True,
              help="Seconds between model swaps (0: none).")
@click.option("--warmup", type=float, default=SoakOptions.warmup, show_default=True,
              help="Seconds before the first kill, and before a process's RSS and fds count.")
@click.option("--process-warmup", type=float, default=SoakOptions.process_warmup, show_default=True,
              help="Seconds after its start before a process's RSS and fds count.")
@click.option("--replicas", type=int, default=SoakOptions.replicas, show_default=True,
              help="Instances of each actor.")
@click.option("--targets", default=",".join(TARGETS), show_default=True, help="What may be killed (comma-separated).")
@click.option("--concurrency", type=int, default=CONCURRENCY, show_default=True)
@click.option("--seed", type=int, help="Seed of the random choices, to repeat a run.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the system's state and up.log here (default: a temporary directory).")
def chaos_command(duration: float, kill_every: float, swap_every: float, warmup: float, process_warmup: float,
                  replicas: int, targets: str, concurrency: int, seed: int | None, state_dir: Path | None) -> None:
    """Run the default app under load, SIGKILL its parts and swap its model; print what it cost.

    Exits 1 when a target of issue 15 is missed (docs/reliability.md).
    """
    options = SoakOptions(duration=duration, kill_every=kill_every, swap_every=swap_every, warmup=warmup,
                          process_warmup=process_warmup, replicas=replicas, targets=_targets(targets),
                          concurrency=concurrency, seed=seed)

    async def main() -> tuple[Report, float, list[Samples]]:
        click.echo(f"starting the default app with {replicas} replica(s) of each actor …", err=True)
        async with chaos_system(options, state_dir) as run:
            report = await soak(run, options, lambda line: click.echo(line, err=True))
            return report, run.started, list(run.samples.values())

    report, started, samples = asyncio.run(main())
    click.echo(render(report, started))
    if state_dir is not None:  # everything measured, each process's RSS and fds over time too
        (state_dir / "chaos.json").write_bytes(msgspec.json.encode({"report": report, "samples": samples}))
    if report.misses():
        sys.exit(1)
