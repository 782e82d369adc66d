"""Secrets in link values, provider config and events are masked before the washboard or the CLI shows them."""

from __future__ import annotations

from mlcloud.masking import MASK, is_sensitive, mask_event_data, mask_values


def test_keys_naming_secrets_are_masked_whatever_their_case():
    values = {"api_key": "k1", "NATS_PASSWORD": "p", "passwd": "p2", "Secret": "s", "auth-token": "t",
              "model": "plus3/0.1.0", "greeting": "hello"}
    assert mask_values(values) == {"api_key": MASK, "NATS_PASSWORD": MASK, "passwd": MASK, "Secret": MASK,
                                   "auth-token": MASK, "model": "plus3/0.1.0", "greeting": "hello"}


def test_empty_secrets_stay_visibly_empty():
    assert mask_values({"token": ""}) == {"token": ""}


def test_credentials_inside_urls_are_masked_under_any_key():
    masked = mask_values({"bindle_url": "https://me:hunter2@bindle.lan/v1", "plain": "http://bindle.lan/v1"})
    assert masked == {"bindle_url": f"https://me:{MASK}@bindle.lan/v1", "plain": "http://bindle.lan/v1"}


def test_nested_config_is_masked():
    masked = mask_values({"engine": {"name": "onnx", "license_key": "x"}, "hosts": ["nats://a:b@h:4222"]})
    assert masked == {"engine": {"name": "onnx", "license_key": MASK}, "hosts": [f"nats://a:{MASK}@h:4222"]}


def test_events_keep_identities_but_mask_values_and_config():
    data = {"public_key": "VABC", "actor_id": "MABC", "values": {"token": "t", "m": "x/1"}, "config": {"password": "p"}}
    assert mask_event_data(data) == {"public_key": "VABC", "actor_id": "MABC",
                                     "values": {"token": MASK, "m": "x/1"}, "config": {"password": MASK}}
    assert is_sensitive("public_key")  # which is why events are masked by field, not by key everywhere


def test_masking_does_not_change_its_input():
    values = {"token": "t"}
    mask_values(values)
    assert values == {"token": "t"}
