"""One `mlcloud up` with the default app for the whole package: its tests kill its parts in turn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlcloud.chaos import UpProcess


@pytest.fixture(scope="package")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    with UpProcess(tmp_path_factory.mktemp("chaos")) as system:
        yield system
