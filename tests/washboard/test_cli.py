"""`mlcloud washboard` as a user runs it: it says where the token is, and its actions need it."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from mlcloud.servers import free_port
from mlcloud.settings import Settings
from mlcloud.washboard.access import TOKEN_FILE, announcement


def test_on_a_terminal_the_address_carries_the_token(tmp_path) -> None:
    line = announcement("127.0.0.1:4000", "tok", tmp_path, terminal=True)
    assert line == "http://127.0.0.1:4000/#token=tok"


def test_into_a_log_the_washboard_names_the_token_file_not_the_token(settings: Settings) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, **settings.to_env(), "MLCLOUD_WASHBOARD_ADDRESS": address}
    process = subprocess.Popen([sys.executable, "-m", "mlcloud.cli", "washboard"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        first = next(line for line in process.stdout if line.startswith("washboard"))
        token_file = settings.state_dir / TOKEN_FILE
        token = token_file.read_text().strip()
        assert f"http://{address}/" in first and str(token_file) in first and token not in first
        scale = f"http://{address}/api/actors/MNOSUCH/scale"
        assert httpx.post(scale, json={"count": 1}).status_code == 401
        with_token = httpx.post(scale, json={"count": 1}, headers={"Authorization": f"Bearer {token}"})
        assert with_token.status_code != 401, with_token.text
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert token not in output
