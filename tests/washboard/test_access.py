"""The washboard's token file: made once, private, and refused when others may read it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlcloud.errors import ConfigError
from mlcloud.washboard.access import TOKEN_FILE, load_or_create_token, page_url


def test_the_token_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    token = load_or_create_token(state_dir)
    assert len(token) >= 40 and load_or_create_token(state_dir) == token
    assert stat.S_IMODE((state_dir / TOKEN_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert page_url("127.0.0.1:4000", token) == f"http://127.0.0.1:4000/#token={token}"


def test_a_token_others_may_read_is_refused(tmp_path: Path) -> None:
    load_or_create_token(tmp_path)
    (tmp_path / TOKEN_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_token(tmp_path)
