"""Publishing the project's own components before a deploy (what ``make run`` relies on).

For every component of an app manifest whose image is an OCI reference into the configured
registry and whose name matches a folder under ``actors/`` or ``providers/``, build the signed
artifact and push it, unless the registry already holds the same code signed the same way
(``push(if_changed=True)``). So the first ``make run`` publishes everything and later runs
publish only what changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from mlcloud.app import AppManifest
from mlcloud.host.artifacts import is_local_ref
from mlcloud.settings import Settings


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

    folders = component_folders(project_dir or Path.cwd())
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
