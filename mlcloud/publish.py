"""Publishing the project's own components before a deploy (what ``make run`` relies on).

For every component of an app manifest whose image is an OCI reference into the configured
registry and whose name matches a folder under ``actors/`` or ``providers/``, build the signed
artifact and push it, unless the registry already holds the same code signed the same way
(``push(if_changed=True)``). So the first ``make run`` publishes everything and later runs
publish only what changed.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

from mlcloud.app import AppManifest
from mlcloud.errors import ConfigError
from mlcloud.host.artifacts import is_local_ref
from mlcloud.settings import Settings

CLASSIFIER_LABELS = Path("models/build/efficientnet-lite0-1.0.0/synset.txt")
POSTPROCESS_LABELS = Path("actors/postprocess/synset.txt")


def stage_labels(project_dir: Path) -> None:
    """Put the ImageNet labels built by ``mlcloud models build`` into the postprocess actor."""
    source, target = project_dir / CLASSIFIER_LABELS, project_dir / POSTPROCESS_LABELS
    if not target.parent.is_dir():
        return
    if not source.exists():
        raise ConfigError(f"{source} is missing: run `mlcloud models build` (or `make models`) first")
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)


async def push_models(settings: Settings, build_dir: Path, say: Callable[[str], None]) -> list[str]:
    """Push every bundle built under ``build_dir`` to Bindle, each invoice signed as creator with
    the account key (what the mlinference provider checks); complete bindles are left alone."""
    from mlcloud.bindle import AsyncClient, SignatureInvalid
    from mlcloud.oci.keys import load_account

    account = load_account(settings.keys_dir)
    pushed = []
    async with AsyncClient(settings.effective_bindle_url) as client:
        for invoice in sorted(build_dir.glob("*/invoice.toml")):
            try:
                result = await client.push_dir(invoice.parent, creator=account)
            except SignatureInvalid as exc:
                if settings.bindle_url is not None:
                    raise
                raise ConfigError(f"{exc.message}. The embedded Bindle server keeps its store in "
                                  f"{settings.state_dir / 'bindle'}: delete that folder and the "
                                  "models are pushed again, signed") from exc
            if not result.nothing_to_do:
                say(f"pushed model {result.bindle_id} ({len(result.uploaded)} parcel(s) uploaded)")
                pushed.append(result.bindle_id)
    return pushed


def component_folders(project_dir: Path) -> dict[str, Path]:
    folders = {}
    for parent in ("actors", "providers"):
        for folder in sorted((project_dir / parent).glob("*/component.toml")):
            folders[folder.parent.name] = folder.parent
    return folders


async def publish_manifest_components(
    manifest: AppManifest, settings: Settings, say: Callable[[str], None], project_dir: Path | None = None
) -> list[str]:
    from mlcloud.oci import Reference, build, push

    project_dir = project_dir or Path.cwd()
    folders = component_folders(project_dir)
    if "postprocess" in folders:
        stage_labels(project_dir)
    published = []
    for spec in manifest.components:
        if is_local_ref(spec.image) or spec.name not in folders:
            continue
        ref = Reference.parse(spec.image, settings.registry)
        if ref.registry != settings.registry:
            continue  # someone else's registry: deploy what is there
        artifact = await asyncio.to_thread(
            build, folders[spec.name], settings.keys_dir, settings.state_dir / "build" / spec.name
        )
        result = await asyncio.to_thread(push, artifact, settings, ref, if_changed=True)
        if result.pushed:
            say(f"published {spec.name} → {result.pinned}")
            published.append(spec.name)
    return published
