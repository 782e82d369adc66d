"""``mlcloud deploy FILE --name …``, ``mlcloud undeploy NAME`` and ``mlcloud models list``: the
notebook API's verbs (:mod:`mlcloud.deployment`) from a shell."""

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
