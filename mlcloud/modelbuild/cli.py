"""``mlcloud models``: build the model bundles, import model-zoo files, make the test photos.

The lead registers :data:`models` in ``mlcloud/cli.py``; every command is idempotent and says
what it did, so ``make models`` can run on every ``make run``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import click

from mlcloud.modelbuild import bundles
from mlcloud.modelbuild.errors import ModelBuildError

_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_models_dir() -> Path:
    """``./models`` when run from a checkout, else the checkout this package is installed from."""
    here = Path("models")
    return here if (here / "zoo.toml").is_file() else _REPO_ROOT / "models"


def default_images_dir() -> Path:
    here = Path("images")
    return here if Path("models", "zoo.toml").is_file() else _REPO_ROOT / "images"


def _dirs(models_dir: Path | None, out: Path | None) -> tuple[Path, Path]:
    models_dir = models_dir or default_models_dir()
    return models_dir, out or models_dir / "build"


_models_option = click.option(
    "--models", "models_dir", type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the model sources (default: ./models).",
)
_out_option = click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path),
    help="Where the bundles go (default: models/build).",
)


@click.group("models")
def models() -> None:
    """Build and import the models mlcloud serves."""


@models.command("build")
@_models_option
@_out_option
@click.option("--only", multiple=True, metavar="NAME", help="Build only this model (name or name/version); repeatable.")
@click.option("--force", is_flag=True, help="Rebuild even what is up to date.")
@click.option("--no-verify", is_flag=True, help="Skip the classification check of built classifiers.")
def build_cmd(models_dir: Path | None, out: Path | None, only: tuple[str, ...], force: bool, no_verify: bool) -> None:
    """Build every bundle that is missing or stale into OUT/{name}-{version}/."""
    models_dir, out = _dirs(models_dir, out)
    try:
        results = bundles.build_all(models_dir, out, only=only, force=force, verify=not no_verify, progress=click.echo)
    except ModelBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    built = 0
    for st, result in results:
        if result is not None:
            built += 1
            kept = f", kept {', '.join(result.reused)}" if result.reused else ""
            click.echo(f"{st.source.id}: built {', '.join(result.built) or 'invoice'}{kept} "
                       f"in {result.seconds:.1f} s → {result.directory}")
        elif st.state is bundles.State.NEEDS_IMPORT:
            click.echo(f"{st.source.id}: skipped, {st.reason}")
        else:
            click.echo(f"{st.source.id}: up to date")
    if built == 0:
        click.echo(f"nothing to build: every buildable bundle in {out} is up to date")


@models.command("status")
@_models_option
@_out_option
def status_cmd(models_dir: Path | None, out: Path | None) -> None:
    """Show, per bundle, whether `models build` would rebuild it and why."""
    models_dir, out = _dirs(models_dir, out)
    try:
        for source in bundles.discover(models_dir):
            st = bundles.status(source, out)
            reason = f" ({st.reason})" if st.reason and st.state is not bundles.State.MISSING else ""
            click.echo(f"{source.id}: {st.state.value}{reason}")
    except ModelBuildError as exc:
        raise click.ClickException(str(exc)) from exc


@models.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_models_option
@_out_option
@click.option("--route", help="HTTP route to serve it on (default: the model's, e.g. mobilenetv27).")
@click.option("--push/--no-push", default=True, show_default=True, help="Push the bindle to Bindle.")
@click.option("--link/--no-link", default=True, show_default=True,
              help="Relink the route on the running lattice to the new bindle.")
def import_cmd(file: Path, models_dir: Path | None, out: Path | None, route: str | None, push: bool,
               link: bool) -> None:
    """Check a model-zoo FILE (size, sha256, shapes), push its bindle and relink its route."""
    from mlcloud.modelbuild import zoo

    models_dir, out = _dirs(models_dir, out)
    try:
        entry, result = zoo.import_file(file, models_dir, out, progress=click.echo)
    except ModelBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    if result is None:
        click.echo(f"{entry.bindle}: already staged from this file")
    else:
        click.echo(f"{entry.bindle}: staged in {result.directory} ({'; '.join(result.notes)})")
    if push:
        asyncio.run(_run(_push_bundle(out / f"{entry.name}-{entry.version}")))
    if link:
        asyncio.run(_run(_relink(route or entry.route or entry.name.replace("-", ""), entry.bindle)))


@models.command("push")
@_models_option
@_out_option
def push_cmd(models_dir: Path | None, out: Path | None) -> None:
    """Push every built bundle to Bindle (--bindle-url / MLCLOUD_BINDLE_URL); complete ones are skipped."""
    from mlcloud.publish import push_models
    from mlcloud.settings import Settings

    _, out = _dirs(models_dir, out)
    pushed = asyncio.run(_run(push_models(Settings.from_env(), out, click.echo)))
    if not pushed:
        click.echo("nothing to push: every bundle is already in Bindle")


T = TypeVar("T")


async def _run(coro: Awaitable[T]) -> T:
    """Await ``coro``, turning mlcloud errors into one line."""
    from mlcloud.errors import MLCloudError

    try:
        return await coro
    except MLCloudError as err:
        raise click.ClickException(f"{err.kind}: {err.message}") from err


async def _push_bundle(directory: Path) -> None:
    """Push one bundle, its invoice signed as creator with the account key."""
    from mlcloud.bindle import AsyncClient
    from mlcloud.oci.keys import load_account
    from mlcloud.settings import Settings

    settings = Settings.from_env()
    async with AsyncClient(settings.effective_bindle_url) as client:
        result = await client.push_dir(directory, creator=load_account(settings.keys_dir))
    click.echo(f"{result.bindle_id}: " + ("already in Bindle" if result.nothing_to_do else
                                          f"pushed ({len(result.uploaded)} parcel(s) uploaded)"))


async def _relink(route: str, bindle_id: str) -> None:
    """Point ``route`` at ``bindle_id`` in every link to the mlinference provider."""
    from mlcloud.interfaces import MLINFERENCE
    from mlcloud.lattice.ctl_client import CtlClient
    from mlcloud.settings import Settings

    async with await CtlClient.connect(Settings.from_env()) as ctl:
        links = [link for link in await ctl.get_links() if link.contract_id == MLINFERENCE]
        if not links:
            raise click.ClickException("no actor is linked to an mlinference provider; is the app deployed?")
        for link in links:
            values = {**link.values, route: bindle_id}
            await ctl.put_link(link.actor_id, link.provider_id, MLINFERENCE, link.link_name, values)
    click.echo(f"route {route} now serves {bindle_id} (the old model keeps serving until the new one is ready)")


@models.command("images")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Default: ./images.")
@_models_option
@click.option("--check/--no-check", default=True, help="Classify cat.jpg and coffee.jpg afterwards.")
def images_cmd(out: Path | None, models_dir: Path | None, check: bool) -> None:
    """Write the test photos (JPEG, quality 90) from scikit-image and matplotlib."""
    from mlcloud.modelbuild import efficientnet_lite0, images, verify

    out = out or default_images_dir()
    try:
        for path, changed in images.write_photos(out):
            click.echo(f"{path}: {'written' if changed else 'unchanged'} ({path.stat().st_size:,} B)")
        if check:
            models_dir, build_out = _dirs(models_dir, None)
            with tempfile.TemporaryDirectory() as tmp:
                model = _built_classifier(models_dir, build_out)
                if model is None:
                    click.echo("converting EfficientNet-Lite0 for the check …")
                    model = efficientnet_lite0.build(Path(tmp) / "efficientnet-lite0.onnx")
                for name, (cls, p) in verify.check_photos(model, out).items():
                    click.echo(f"{name}: class {cls} p={p:.3f} ok")
    except ModelBuildError as exc:
        raise click.ClickException(str(exc)) from exc


def _built_classifier(models_dir: Path, out: Path) -> Path | None:
    """The built EfficientNet-Lite0 file when its bundle is up to date, else None."""
    try:
        source = bundles.load_source(models_dir / "efficientnet-lite0" / "1.0.0")
    except ModelBuildError:
        return None
    if bundles.status(source, out).state is not bundles.State.UP_TO_DATE:
        return None
    return bundles.bundle_dir(out, source) / "efficientnet-lite0.onnx"
