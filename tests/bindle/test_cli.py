"""``mlcloud bindle …`` commands against the real server (click's CliRunner, in process)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlcloud.bindle import AsyncClient, Invoice, Label
from mlcloud.bindle.cli import bindle
from mlcloud.identity import KeyKind, KeyPair
from mlcloud.oci.keys import load_account
from mlcloud.settings import Settings
from mlcloud.testing.bindle import BindleServerProcess


@pytest.fixture
def run(server: BindleServerProcess):
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True) -> str:
        result = runner.invoke(bindle, [*args, "--bindle-url", server.url])
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    return invoke


def _make_push_dir(directory: Path, name: str) -> dict[str, bytes]:
    files = {"model.onnx": os.urandom(4096), "metadata.json": json.dumps({"n": name}).encode()}
    directory.mkdir()
    for file_name, data in files.items():
        (directory / file_name).write_bytes(data)
    runner = CliRunner()
    labels = [runner.invoke(bindle, ["generate-label", str(directory / f)]).output for f in files]
    (directory / "invoice.toml").write_text(
        f'bindleVersion = "1.0.0"\n\n[bindle]\nname = "{name}"\nversion = "0.1.0"\n'
        f'description = "cli test"\n\n' + "\n".join(labels))
    return files


def test_generate_label_prints_a_parcel_entry(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    path.write_bytes(b'{"model_name": "x"}')
    out = CliRunner().invoke(bindle, ["generate-label", str(path)]).output
    label = tomllib.loads(out)["parcel"][0]["label"]
    assert label == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                     "mediaType": "application/json", "name": "metadata.json", "size": 19}


def test_push_dir_signs_and_twice_is_a_no_op_and_says_so(run, tmp_path: Path) -> None:
    name = f"cli/{os.urandom(4).hex()}"
    files = _make_push_dir(tmp_path / "push", name)
    out = run("push", str(tmp_path / "push"))
    assert f"created {name}/0.1.0" in out and "uploaded model.onnx" in out
    out = run("push", str(tmp_path / "push"))
    assert "nothing to do" in out

    info = tomllib.loads(run("info", f"{name}/0.1.0"))
    assert info["bindle"]["description"] == "cli test"
    account = load_account(Settings.from_env().keys_dir)  # the push signed as creator with it
    assert [(s["role"], s["by"]) for s in info["signature"]][0] == ("creator", account.public_key)
    assert json.loads(run("info", f"{name}/0.1.0", "-o", "json"))["bindle"]["name"] == name

    out = run("search", name)
    assert f"{name}/0.1.0  2 parcel(s)  cli test" in out and "1 of 1" in out
    found = json.loads(run("search", name, "--version", "0.1.x", "--strict", "-o", "json"))
    assert found["total"] == 1

    sha = hashlib.sha256(files["model.onnx"]).hexdigest()
    run("get-parcel", f"{name}/0.1.0", sha, "-o", str(tmp_path / "got.onnx"))
    assert (tmp_path / "got.onnx").read_bytes() == files["model.onnx"]

    assert "yanked" in run("yank", f"{name}/0.1.0")
    out = run("info", f"{name}/0.1.0", ok=False)
    assert "Yanked" in out and "Traceback" not in out
    assert "yanked = true" in run("info", f"{name}/0.1.0", "--yanked")
    assert "0 of 0" in run("search", name)
    assert "(yanked)" in run("search", name, "--yanked")


def test_push_invoice_then_push_file(run, tmp_path: Path, server: BindleServerProcess) -> None:
    name = f"cli/{os.urandom(4).hex()}"
    _make_push_dir(tmp_path / "d", name)
    seed = tmp_path / "creator.nk"
    seed.write_text(KeyPair.generate(KeyKind.ACCOUNT).seed)
    out = run("push-invoice", str(tmp_path / "d" / "invoice.toml"), "--sign-with", str(seed),
              "--signer", "tester")
    assert f"created {name}/0.1.0" in out and out.count("missing parcel") == 2
    assert "already exists" in run("push-invoice", str(tmp_path / "d" / "invoice.toml"), ok=False)
    for file_name in ("model.onnx", "metadata.json"):
        assert "uploaded" in run("push-file", f"{name}/0.1.0", str(tmp_path / "d" / file_name))

    async def stored() -> tuple[list[Label], Invoice]:
        async with AsyncClient(server.url) as client:
            return await client.missing_parcels(f"{name}/0.1.0"), await client.get_invoice(f"{name}/0.1.0")

    missing, invoice = asyncio.run(stored())  # the CLI runs its own loop, so this test has none
    assert missing == [] and invoice.signature[0].by == "tester"
    stray = tmp_path / "stray.bin"
    stray.write_bytes(b"stray")
    assert "InvalidParcel" in run("push-file", f"{name}/0.1.0", str(stray), ok=False)


def test_unreachable_server_is_one_line_not_a_traceback() -> None:
    result = CliRunner().invoke(bindle, ["info", "a/1.0.0", "--bindle-url",
                                         "http://127.0.0.1:9/v1"])
    assert result.exit_code == 1 and "BindleUnavailable" in result.output


def test_bindle_url_defaults_to_settings(monkeypatch: pytest.MonkeyPatch,
                                         server: BindleServerProcess) -> None:
    monkeypatch.setenv("MLCLOUD_BINDLE_ADDRESS", server.address)
    monkeypatch.delenv("MLCLOUD_BINDLE_URL", raising=False)
    result = CliRunner().invoke(bindle, ["search", "no-such-bindle-anywhere"])
    assert result.exit_code == 0 and "0 of 0" in result.output
