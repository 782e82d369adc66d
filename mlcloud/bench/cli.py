"""``mlcloud bench``: the side-by-side benchmark as a click command (registered by mlcloud.cli).

Progress goes to stderr; the result goes to stdout as tables, or as one JSON document with
``--json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from mlcloud.bench.peers import PEER_NAMES
from mlcloud.bench.result import BenchResult
from mlcloud.bench.runner import BenchConfig, run_bench
from mlcloud.bench.workload import ORT_SETUPS

SYSTEMS = ("limit", "naive", "mlcloud")


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers, got {text!r}") from None
    if not levels or levels[0] < 1:
        raise click.BadParameter("concurrency levels must be 1 or more")
    return levels


def _names(text: str, known: Any, what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise click.BadParameter(f"unknown {what} {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    return names


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        """The first two columns are names (left-aligned), the rest figures (right-aligned)."""
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)

    return "\n".join(line(cells) for cells in [header, *rows])


def render(result: BenchResult) -> str:
    """The result as plain-text tables: runs, ratios, memory, notes."""
    header = ["system", "variant", "c", "req/s", "p50 ms", "p90 ms", "p99 ms", "cpu cores", "cpu ms/req",
              "peak MB", "errors"]
    rows = [[r.system, r.variant, str(r.concurrency), _fmt(r.throughput), _fmt(r.p50_ms), _fmt(r.p90_ms),
             _fmt(r.p99_ms), _fmt(r.cpu_cores, 2), _fmt(r.cpu_ms_per_request), _fmt(r.peak_rss_mb, 0),
             str(r.errors)] for r in result.runs]
    out = [_table(rows, header)]
    ratios = result.ratios()
    if ratios:
        ratio_rows = []
        for row in ratios:
            for key in [k for k in row if k.startswith("mlcloud/")]:
                r = row[key]
                if r:
                    ratio_rows.append([key, r["variant"], str(row["concurrency"]), _fmt(r["throughput"], 2),
                                       _fmt(r["p50"], 2), _fmt(r["p50_delta_ms"], 1), _fmt(r["cpu_per_request"], 2)])
        out += ["", _table(ratio_rows, ["ratio", "against (best set-up)", "c", "req/s", "p50", "p50 Δ ms",
                                        "cpu/req"])]
    # mlcloud's and each other checkout's (--against) processes, side by side.
    split = [r for r in result.runs if r.system.startswith("mlcloud") and r.variant == "onnxruntime" and r.processes]
    if split:
        names = sorted({name for r in split for name in r.processes})

        def share(run: Any, name: str) -> str:
            part = run.processes.get(name)
            return "-" if part is None else f"{part['cpu_ms_per_request']:.2f} / {part['wakeups_per_request']:.1f}"

        rows = [[name, "", *(share(r, name) for r in split)] for name in names]
        levels = [f"{r.system.removeprefix('mlcloud')} c={r.concurrency}: cpu ms / wake-ups a req".lstrip()
                  for r in split]
        out += ["", _table(rows, ["mlcloud process", "", *levels])]
    targets = result.targets()
    if targets:
        verdict = {True: "met", False: "NOT met", None: "not measured"}
        target_rows = [[t["target"], "" if t["concurrency"] is None else str(t["concurrency"]), _fmt(t["value"], 2),
                        t["goal"], verdict[t["met"]], t["against"]] for t in targets]
        out += ["", _table(target_rows, ["target", "c", "value", "goal", "", "against"])]
        out += [f"  why not {t['target']}: {t['why']}" for t in targets if t.get("why")]
    if result.memory:
        parts = ", ".join(f"{name} {mb:.0f}" for name, mb in result.memory.get("processes_mb", {}).items())
        out += ["", f"mlcloud memory: peak {result.memory['peak_rss_mb']:.0f} MB RSS over the tree "
                    f"during the main runs; now {result.memory['rss_mb_now']:.0f} MB ({parts})"]
    for note in result.notes:
        out.append(f"note: {note}")
    m = result.machine
    out.append(f"machine: {m.get('cpus')} CPUs, {m.get('platform')}, python {m.get('python')}, "
               f"onnxruntime {m.get('onnxruntime')}, tract {m.get('tract', 'absent')}")
    return "\n".join(out)


@click.command("bench")
@click.option("--quick", is_flag=True, help="A tiny run (concurrency 1 and 4, a dozen requests) to check it works.")
@click.option("--concurrency", "-c", default=None, help="Comma-separated concurrency levels (default 1,4,16).")
@click.option("--requests", "-n", type=int, default=None, help="Timed requests per system and level (default 300).")
@click.option("--warmup", type=int, default=None, help="Untimed requests before each round (default 10).")
@click.option("--rounds", type=int, default=None, help="Turns each system takes per level (default 3).")
@click.option("--only", "systems", multiple=True, type=click.Choice(SYSTEMS),
              help="Run only these systems (repeatable); ratios need mlcloud and the other one.")
@click.option("--setups", default=None,
              help=f"onnxruntime set-ups of the limit and the naive server, comma-separated; the best at each "
                   f"level counts (default: all of {','.join(ORT_SETUPS)}).")
@click.option("--peers", "peer_names", default="",
              help=f"Also install and measure these framework peers (comma-separated: {','.join(PEER_NAMES)}), "
                   "each in its own venv under the state dir; needs the package index the first time.")
@click.option("--no-batching", is_flag=True, help="Skip the batching off/on runs.")
@click.option("--no-tract", is_flag=True, help="Skip the tract runs.")
@click.option("--batch-max-size", type=int, default=8, show_default=True)
@click.option("--batch-max-wait-ms", type=float, default=2.0, show_default=True)
@click.option("--build-dir", type=click.Path(path_type=Path), default=None,
              help="Built models (default: build them into models/build if needed).")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Keep the lattice's state here (default: a temporary directory).")
@click.option("--against", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also measure mlcloud from this checkout (e.g. a git worktree of an older commit), "
                   "interleaved with this one: before/after figures from one run. Repeatable.")
@click.option("--batch", is_flag=True,
              help="Instead: `mlcloud predict` over a folder of the photos beside the HTTP path, at the highest "
                   "--concurrency (default 16), in turns; prints both and their ratio (mlcloud.bench.batch).")
@click.option("--url", help="With --batch: measure the lattice at this HTTP URL instead of starting one.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def bench_command(quick: bool, concurrency: str | None, requests: int | None, warmup: int | None,
                  rounds: int | None, systems: tuple[str, ...], setups: str | None, peer_names: str,
                  no_batching: bool, no_tract: bool, batch_max_size: int,
                  batch_max_wait_ms: float, build_dir: Path | None, work_dir: Path | None,
                  against: tuple[Path, ...], batch: bool, url: str | None, as_json: bool, quiet: bool) -> None:
    """Benchmark mlcloud against the in-process limit and a naive aiohttp server, side by side."""
    if batch:
        from mlcloud.bench.batch import run_batch_bench

        comparison = run_batch_bench(
            url=url, concurrency=max(_levels(concurrency)) if concurrency else 16, requests=requests or 200,
            rounds=max(1, rounds or 3), work_dir=work_dir,
            say=(lambda line: None) if quiet else (lambda line: click.echo(line, err=True)))
        click.echo(json.dumps(comparison.to_json(), indent=2) if as_json else str(comparison))
        return
    changes: dict[str, Any] = {
        "batching": not no_batching, "tract": not no_tract, "batch_max_size": batch_max_size,
        "batch_max_wait_ms": batch_max_wait_ms, "progress": not quiet, "build_dir": build_dir,
        "work_dir": work_dir, "against": tuple(str(p) for p in against),
    }
    if concurrency is not None:
        changes["concurrency"] = _levels(concurrency)
    if requests is not None:
        changes["requests"] = requests
    if warmup is not None:
        changes["warmup"] = warmup
    if rounds is not None:
        changes["rounds"] = max(1, rounds)
    if systems:
        changes["systems"] = tuple(s for s in SYSTEMS if s in systems)
    if setups is not None:
        changes["setups"] = _names(setups, ORT_SETUPS, "set-up")
    if peer_names:
        changes["peers"] = _names(peer_names, PEER_NAMES, "peer")
    config = BenchConfig.quick(**changes) if quick else BenchConfig(**changes)
    say = (lambda line: None) if quiet else (lambda line: click.echo(line, err=True))
    result = run_bench(config, say)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, allow_nan=False, default=str))
    else:
        click.echo(render(result))
