"""``mlcloud deploy FILE --name …``, ``mlcloud undeploy NAME``, ``mlcloud models list``, ``mlcloud
split NAME …`` and ``mlcloud unsplit NAME``: the notebook API's verbs (:mod:`mlcloud.deployment`)
from a shell."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from mlcloud.settings import Settings

PICKLES = (".pkl", ".pickle", ".joblib")


@click.command("deploy")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The route: the model answers at /NAME.")
@click.option("--version", help="Bindle version (default: the next patch version of NAME, or 1.0.0).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait until READY.")
def deploy_command(file: Path, name: str, version: str | None, timeout: float) -> None:
    """Serve FILE (.onnx, a TF1 frozen .pb, an XGBoost .json/.ubj, a LightGBM .txt, or a pickled
    scikit-learn model: .pkl/.joblib) as route NAME.

    A new version of a deployed NAME replaces the old one once it is READY (no failed request).
    """
    from mlcloud.cli import run_async
    from mlcloud.deployment import deploy_async

    model = _load(file) if file.suffix.lower() in PICKLES else file
    deployment = run_async(deploy_async)(model, name, version, settings=Settings.from_env(), timeout=timeout,
                                         progress=click.echo)
    click.echo(f"\n{deployment.curl}")


def _load(file: Path) -> Any:
    """A pickled estimator (only load pickles you trust: unpickling runs code)."""
    from mlcloud.modelbuild.convert import pip_hint

    try:
        import joblib
    except ImportError:
        raise click.ClickException(f"loading {file.name} needs scikit-learn: {pip_hint('sklearn')}") from None
    return joblib.load(file)


@click.command("undeploy")
@click.argument("name")
def undeploy_command(name: str) -> None:
    """Take route NAME out of service (its bindles stay in Bindle)."""
    from mlcloud.cli import run_async
    from mlcloud.deployment import undeploy_async

    run_async(undeploy_async)(name, settings=Settings.from_env())
    click.echo(f"{name} undeployed")


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_command(as_json: bool) -> None:
    """Every route the lattice serves, with its bindle, state and URL."""
    from mlcloud.cli import emit, print_table, run_async
    from mlcloud.deployment import models_async

    found = run_async(models_async)(settings=Settings.from_env())
    rows = [dataclasses.asdict(m) for m in found]
    emit(rows, as_json, lambda: print_table(rows, ["name", "bindle_id", "state", "url", "reason"]))


@click.command("split")
@click.argument("name")
@click.argument("arms", nargs=-1)
@click.option("--policy", type=click.Choice(["fixed", "thompson"]), help="How a request's version is chosen "
              "(default: fixed with weights, else the split's own, else thompson).")
@click.option("--show", is_flag=True, help="Show the splits: arms, traffic shares, reward means and intervals.")
@click.option("--json", "as_json", is_flag=True, help="With --show: as JSON.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait until arms are READY.")
def split_command(name: str, arms: tuple[str, ...], policy: str | None, show: bool, as_json: bool,
                  timeout: float) -> None:
    """Split route NAME's traffic between versions of its bindle: ARMS as VERSION=WEIGHT
    (``1.0.0=0.9 2.0.0=0.1``), or VERSION with --policy thompson (none: the split's versions, else
    every version). Rewards go to ``POST /NAME/feedback``; a request's ``X-Split-Key`` keeps its arm.
    """
    from mlcloud.cli import emit, print_table, run_async
    from mlcloud.deployment import experiments_async, split_async

    settings = Settings.from_env()
    if show:
        found = [e for e in run_async(experiments_async)(settings=settings) if e["route"] == name]
        rows = [{"route": e["route"], "policy": e["policy"], **_arm_row(arm)} for e in found for arm in e["arms"]]
        emit(found, as_json, lambda: print_table(rows, ["route", "policy", "version", "weight", "share", "rewards",
                                                        "mean", "interval"]))
        return
    weights = _parse_arms(arms)
    if not weights and policy is None:
        raise click.UsageError("give the arms (VERSION=WEIGHT …), --policy thompson, or --show; "
                               "`mlcloud unsplit NAME` ends a split")
    run_async(split_async)(name, weights or None, policy=policy or (None if weights else "thompson"),
                           settings=settings, timeout=timeout, progress=click.echo)


def _parse_arms(arms: tuple[str, ...]) -> dict[str, float]:
    weights = {}
    for arm in arms:
        version, _, weight = arm.partition("=")
        try:
            weights[version] = float(weight) if weight else 1.0
        except ValueError:
            raise click.BadParameter(f"{arm!r}: expected VERSION=WEIGHT, e.g. 2.0.0=0.1", param_hint="ARMS") from None
    return weights


def _arm_row(arm: dict[str, Any]) -> dict[str, Any]:
    share = "-" if arm["share"] is None else f"{arm['share']:.1%}"
    return {"version": arm["version"], "weight": f"{arm['weight']:.2f}", "share": share, "rewards": arm["rewards"],
            "mean": f"{arm['mean']:.3f}", "interval": f"[{arm['low']:.3f}, {arm['high']:.3f}]"}


@click.command("unsplit")
@click.argument("name")
def unsplit_command(name: str) -> None:
    """End route NAME's experiment: it serves its own version alone again."""
    from mlcloud.cli import run_async
    from mlcloud.deployment import split_async

    run_async(split_async)(name, None, settings=Settings.from_env(), progress=click.echo)
