"""``mlcloud build``, ``mlcloud push`` and ``mlcloud keys`` as plain click commands.

mlcloud/cli.py registers them (``main.add_command(build_command)`` …). Settings come from the
click context when the group put a :class:`~mlcloud.settings.Settings` in ``ctx.obj`` (or an
object with a ``settings`` attribute), otherwise from the environment; flags override both.
"""

from __future__ import annotations

from pathlib import Path

import click

from mlcloud.component import MANIFEST_NAME, ComponentManifest
from mlcloud.errors import MLCloudError
from mlcloud.oci.build import ARTIFACT_FILE, BuiltArtifact, build
from mlcloud.oci.keys import account_key_path, list_keys
from mlcloud.oci.push import push
from mlcloud.settings import Settings


def _settings(**overrides: object) -> Settings:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx else None
    base = obj if isinstance(obj, Settings) else getattr(obj, "settings", None)
    if not isinstance(base, Settings):
        base = Settings.from_env()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**changes) if changes else base


def default_build_dir(settings: Settings, manifest: ComponentManifest) -> Path:
    return settings.state_dir / "build" / f"{manifest.name}-{manifest.version}"


def _build(folder: Path, settings: Settings, out: Path | None) -> BuiltArtifact:
    manifest = ComponentManifest.load(folder)
    return build(folder, settings.keys_dir, out or default_build_dir(settings, manifest))


def _fail(exc: MLCloudError) -> click.ClickException:
    return click.ClickException(f"{exc.kind}: {exc.message}")


@click.command("build")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (default: state dir).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Build outputs live here.")
@click.option("--keys-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Signing keys (default: the user's, MLCLOUD_KEYS_DIR).")
def build_command(folder: Path, out: Path | None, state_dir: Path | None, keys_dir: Path | None) -> None:
    """Package and sign the component in FOLDER (e.g. actors/preprocess)."""
    settings = _settings(state_dir=state_dir, keys_dir=keys_dir)
    try:
        artifact = _build(folder, settings, out)
    except MLCloudError as exc:
        raise _fail(exc) from exc
    m = artifact.manifest
    click.echo(f"built {m.name} {m.version} ({m.kind}, revision {m.revision})")
    click.echo(f"  digest   {artifact.layer_digest}")
    click.echo(f"  subject  {artifact.subject_key}")
    click.echo(f"  issuer   {artifact.issuer_key}")
    click.echo(f"  output   {artifact.folder}")


@click.command("push")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--registry", help="Registry host:port (default: the embedded one, MLCLOUD_REGISTRY).")
@click.option("--ref", "reference", help="Full reference to push to (default: REGISTRY/mlcloud/NAME:VERSION).")
@click.option("--if-changed", is_flag=True, help="Leave the tag alone when it already holds this code and keys.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
def push_command(
    source: Path, registry: str | None, reference: str | None, if_changed: bool, state_dir: Path | None
) -> None:
    """Push SOURCE: a component folder (built first) or a folder `mlcloud build` wrote."""
    settings = _settings(state_dir=state_dir, registry=registry)
    try:
        if (source / ARTIFACT_FILE).is_file():
            artifact = BuiltArtifact.load(source)
        elif (source / MANIFEST_NAME).is_file():
            artifact = _build(source, settings, None)
        else:
            raise click.UsageError(f"{source} holds neither {MANIFEST_NAME} nor a built {ARTIFACT_FILE}")
        result = push(artifact, settings, reference, if_changed=if_changed)
    except MLCloudError as exc:
        raise _fail(exc) from exc
    verb = "pushed" if result.pushed else "unchanged"
    click.echo(f"{verb} {result.reference.registry}/{result.reference.repository}:{result.reference.tag}")
    click.echo(f"  digest   {result.digest}")
    click.echo(f"  pinned   {result.pinned}")
    click.echo(f"  layer    {artifact.layer_digest}")


@click.command("keys")
@click.option("--keys-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the keys are (default: the user's, MLCLOUD_KEYS_DIR).")
def keys_command(keys_dir: Path | None) -> None:
    """List the signing keys: the issuer account and each component's identity."""
    settings = _settings(keys_dir=keys_dir)
    keys = list_keys(settings.keys_dir)
    if not keys:
        click.echo(f"no keys in {settings.keys_dir} yet: `mlcloud build FOLDER` creates them")
        click.echo(f"  (the issuer account key will be {account_key_path(settings.keys_dir).name})")
        return
    width = max(len(k.name) for k in keys)
    click.echo(f"{'NAME':<{width}}  {'KIND':<8}  PUBLIC KEY")
    for k in keys:
        click.echo(f"{k.name:<{width}}  {k.kind:<8}  {k.public_key}")
    click.echo(f"({settings.keys_dir})")
