"""``mlcloud models`` through click's CliRunner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlcloud.modelbuild.cli import models

from .conftest import MODELS


def test_build_is_idempotent_and_says_so(tmp_path: Path):
    runner = CliRunner()
    args = ["build", "--models", str(MODELS), "--out", str(tmp_path), "--only", "identity_model", "--only", "plus3"]
    first = runner.invoke(models, args)
    assert first.exit_code == 0, first.output
    assert "building identity_model/0.2.0" in first.output
    assert "plus3/0.1.0: built plus3.pb, metadata.json" in first.output
    second = runner.invoke(models, args)
    assert second.exit_code == 0, second.output
    assert "identity_model/0.2.0: up to date" in second.output
    assert "nothing to build" in second.output
    assert "generating" not in second.output


def test_build_reports_models_that_need_an_import(tmp_path: Path, built_tree: Path):
    result = CliRunner().invoke(models, ["build", "--models", str(MODELS), "--out", str(built_tree)])
    assert result.exit_code == 0, result.output
    assert "mobilenetv2-7/0.1.0: skipped, needs mobilenetv2-7.onnx" in result.output
    assert "nothing to build" in result.output


def test_status_lists_every_bundle(built_tree: Path):
    result = CliRunner().invoke(models, ["status", "--models", str(MODELS), "--out", str(built_tree)])
    assert result.exit_code == 0, result.output
    assert "efficientnet-lite0/1.0.0: up to date" in result.output
    assert "squeezenetv1-1-7/0.1.0: needs import" in result.output


def test_unknown_model_is_a_clean_error(tmp_path: Path):
    result = CliRunner().invoke(models, ["build", "--models", str(MODELS), "--out", str(tmp_path), "--only", "nope"])
    assert result.exit_code == 1
    assert "no model named nope" in result.output


def test_import_refuses_a_wrong_file(tmp_path: Path):
    fake = tmp_path / "mobilenetv2-7.onnx"
    fake.write_bytes(b"x")
    result = CliRunner().invoke(models, ["import", str(fake), "--models", str(MODELS), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "expected 13,963,115" in result.output


def test_images_writes_and_checks(tmp_path: Path, built_tree: Path, monkeypatch):
    from mlcloud.modelbuild import cli

    monkeypatch.setattr(cli, "_dirs", lambda m, o: (MODELS, built_tree))  # reuse the session build
    result = CliRunner().invoke(models, ["images", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "cat.jpg: class 285" in result.output and "coffee.jpg: class 967" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cat.jpg", "coffee.jpg", "rocket.jpg", "motorcycle.jpg", "grace_hopper.jpg"])


def test_push_signs_every_invoice_with_the_account_key(tmp_path: Path):
    from mlcloud.bindle import AsyncClient, verify_invoice
    from mlcloud.bindle.signing import keyring_of_accounts
    from mlcloud.oci.keys import load_account
    from mlcloud.testing.bindle import BindleServerProcess

    runner = CliRunner()
    out = tmp_path / "build"
    built = runner.invoke(models, ["build", "--models", str(MODELS), "--out", str(out), "--only", "identity_model"])
    assert built.exit_code == 0, built.output
    with BindleServerProcess(tmp_path / "bindle") as server:
        env = {"MLCLOUD_BINDLE_URL": server.url, "MLCLOUD_KEYS_DIR": str(tmp_path / "keys")}
        args = ["push", "--models", str(MODELS), "--out", str(out)]
        first = runner.invoke(models, args, env=env)
        assert first.exit_code == 0 and "pushed model identity_model/0.2.0" in first.output, first.output
        assert "nothing to push" in runner.invoke(models, args, env=env).output

        async def stored():
            async with AsyncClient(server.url) as client:
                return await client.get_invoice("identity_model/0.2.0")

        invoice = asyncio.run(stored())
    account = load_account(tmp_path / "keys")
    assert [(s.role, s.by) for s in invoice.signature or []][0] == ("creator", account.public_key)
    assert [s.role for s in invoice.signature or []] == ["creator", "host"]
    verify_invoice(invoice, keyring_of_accounts([account.public_key]))


def test_push_onto_an_unsigned_copy_in_the_embedded_store_says_how_to_fix_it(tmp_path: Path):
    from mlcloud.bindle import AsyncClient
    from mlcloud.errors import ConfigError
    from mlcloud.publish import push_models
    from mlcloud.settings import Settings
    from mlcloud.testing.bindle import BindleServerProcess

    out = tmp_path / "build"
    built = CliRunner().invoke(models, ["build", "--models", str(MODELS), "--out", str(out), "--only", "plus3"])
    assert built.exit_code == 0, built.output
    with BindleServerProcess(tmp_path / "state" / "bindle") as server:
        settings = Settings.from_env({}, state_dir=tmp_path / "state", keys_dir=tmp_path / "keys",
                                     bindle_address=server.address)

        async def push_unsigned_then_signed() -> None:
            async with AsyncClient(server.url) as client:
                await client.push_dir(out / "plus3-0.1.0")  # as mlcloud did before invoices were signed
            await push_models(settings, out, lambda line: None)

        with pytest.raises(ConfigError, match="already stored without a creator signature") as info:
            asyncio.run(push_unsigned_then_signed())
    assert f"{tmp_path / 'state' / 'bindle'}: delete that folder" in info.value.message
