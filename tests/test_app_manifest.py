"""Parsing wadm-style manifests: substitution, placement, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlcloud.app import AppManifest
from mlcloud.component import ComponentKind
from mlcloud.errors import ConfigError
from mlcloud.lattice.control import HostInventory
from tests.conftest import FIXTURES, PROJECT


def test_default_app_parses_with_settings_substituted():
    manifest = AppManifest.load(PROJECT / "deploy" / "app.yaml", {"MLCLOUD_REGISTRY": "reg:5001"})
    api = next(c for c in manifest.components if c.name == "api")
    assert api.image == "reg:5001/mlcloud/api:0.1.0" and api.kind is ComponentKind.ACTOR
    assert {link.target for link in api.links} == {"httpserver", "mlinference"}
    mlinference = next(c for c in manifest.components if c.name == "mlinference")
    assert mlinference.kind is ComponentKind.PROVIDER and mlinference.contract == "wasmcloud:mlinference"


def test_local_images_resolve_next_to_the_manifest_and_requirements_place():
    manifest = AppManifest.load(FIXTURES / "apps" / "echo.yaml", {"ECHO_GREETING": "hey"})
    caller, echo = manifest.components
    assert Path(caller.image) == (FIXTURES / "components" / "caller").resolve()
    assert caller.replicas == 2 and caller.links[0].values == {"greeting": "hey"}
    assert echo.placeable_on(HostInventory(host_id="N1", labels={"zone": "test"}))
    assert not echo.placeable_on(HostInventory(host_id="N2", labels={"zone": "x"}))


def write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def app(*components: dict) -> dict:
    return {"kind": "Application", "metadata": {"name": "t"}, "spec": {"components": list(components)}}


ACTOR = {"name": "a", "type": "actor", "properties": {"image": "r/a:1"}}
PROVIDER = {"name": "p", "type": "capability", "properties": {"image": "r/p:1", "contract": "c:x"}}


@pytest.mark.parametrize("document, message", [
    ({"kind": "Deployment"}, "not an Application"),
    (app({"name": "a", "type": "actor"}), "properties.image"),
    (app({**ACTOR, "type": "wasm"}), "actor|capability"),
    (app(ACTOR, {**ACTOR}), "unique"),
    (app({**ACTOR, "traits": [{"type": "linkdef", "properties": {"values": {}}}]}), "invalid traits on a"),
    (app({**ACTOR, "traits": [{"type": "spreadscaler", "properties": {"replicas": "many"}}]}), "invalid traits on a"),
    (app({**ACTOR, "traits": ["spreadscaler"]}), "invalid traits on a"),
    (app({**ACTOR, "traits": [{"type": "autoscaler"}]}), "unknown trait 'autoscaler'"),
    (app({**ACTOR, "traits": [{"type": "linkdef", "properties": {"target": "a"}}]}), "not a provider"),
])
def test_bad_manifests_are_config_errors_naming_the_problem(tmp_path, document, message):
    with pytest.raises(ConfigError, match=message):
        AppManifest.load(write(tmp_path, document), {})


def test_unset_variable_is_named(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text("kind: Application\nspec:\n  components:\n    - name: a\n      type: actor\n"
                    "      properties:\n        image: ${NOPE}/a\n")
    with pytest.raises(ConfigError, match=r"\$\{NOPE\}"):
        AppManifest.load(path, {})


def test_a_link_to_a_provider_parses(tmp_path):
    linked = {**ACTOR, "traits": [{"type": "linkdef", "properties": {"target": "p", "values": {"k": 1}}}]}
    manifest = AppManifest.load(write(tmp_path, app(linked, PROVIDER)), {})
    assert manifest.components[0].links[0].values == {"k": "1"}


def test_an_unquoted_yaml_boolean_requirement_matches_the_hosts_label(tmp_path):
    """`coral: true` (a YAML bool) places on hosts labelled coral=true, as install.sh labels boards."""
    spread = {"type": "spreadscaler", "properties": {"spread": [{"requirements": {"arch": "aarch64", "coral": True}}]}}
    (provider,) = AppManifest.load(write(tmp_path, app({**PROVIDER, "traits": [spread]})), {}).components
    assert provider.requirements == {"arch": "aarch64", "coral": "true"}
    assert provider.placeable_on(HostInventory(host_id="N1", labels={"arch": "aarch64", "coral": "true"}))
    assert not provider.placeable_on(HostInventory(host_id="N2", labels={"arch": "aarch64", "coral": "false"}))
