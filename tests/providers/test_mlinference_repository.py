"""The mlinference provider's route table: link values changed by model repository loads and unloads."""

from __future__ import annotations

from types import ModuleType

import pytest

from mlcloud.inference.config import parse_link_values
from tests.actors.conftest import PROJECT, load_by_path


@pytest.fixture(scope="module")
def repository() -> ModuleType:
    return load_by_path("_mlcloud_provider_mlinference_repository",
                        PROJECT / "providers" / "mlinference" / "repository.py")


def test_loads_and_unloads_change_what_is_served_on_top_of_the_link(repository: ModuleType) -> None:
    table = repository.RouteTable(parse_link_values({"a": "x/1.0.0", "b": "y/1.0.0"}))
    table.unload("a")
    table.load("c", "z/1.0.0")
    table.load("b", "y/2.0.0")
    assert table.routes == {"b": "y/2.0.0", "c": "z/1.0.0"} and table.unloaded == {"a": "x/1.0.0"}
    table.load("a", "x/1.0.0")  # back to the link's own value: no change left
    assert table.changes == {"b": "y/2.0.0", "c": "z/1.0.0"}
    table.unload("c")  # not on the link: simply gone
    assert table.routes == {"a": "x/1.0.0", "b": "y/2.0.0"} and table.unloaded == {}


def test_a_relink_forgets_the_changes_of_the_routes_whose_value_it_changes(repository: ModuleType) -> None:
    table = repository.RouteTable(parse_link_values({"a": "x/1.0.0", "b": "y/1.0.0"}))
    table.unload("a")
    table.unload("b")
    table.relink(parse_link_values({"a": "x/1.0.0", "b": "y/3.0.0"}))
    assert table.routes == {"b": "y/3.0.0"}  # a's value did not change, so it stays unloaded
