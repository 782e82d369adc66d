"""Reading an answer's model headers, saved or live (the checks against Bindle: tests/e2e/test_verify.py)."""

from __future__ import annotations

import pytest

from mlcloud.errors import RequestError
from mlcloud.interfaces import ModelSource
from mlcloud.verification import parse_saved_headers, sources_of

A, B = "a" * 64, "b" * 64


def test_a_saved_answer_gives_the_headers_of_its_last_block_and_not_its_body():
    saved = ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx-model: iris/1.0.0\r\n"
             f"X-Model-Sha256: {A.upper()}\r\ncontent-type: application/json\r\n\r\n"
             '{"predictions": [0]}\nnot: a header\n')
    headers = parse_saved_headers(saved)
    assert headers == {"x-model": "iris/1.0.0", "X-Model-Sha256": A.upper(), "content-type": "application/json"}
    assert sources_of(headers) == [ModelSource(bindle_id="iris/1.0.0", sha256=A)]


def test_an_answer_of_two_models_names_both_in_order():
    headers = {"X-Model": "iris/1.0.0, iris/2.0.0", "X-Model-Sha256": f"{A}, {B}"}
    assert sources_of(headers) == [ModelSource(bindle_id="iris/1.0.0", sha256=A),
                                   ModelSource(bindle_id="iris/2.0.0", sha256=B)]


@pytest.mark.parametrize("headers, message", [
    ({}, "no X-Model and X-Model-Sha256 headers"),
    ({"X-Model": "iris/1.0.0"}, "no X-Model and X-Model-Sha256 headers"),
    ({"X-Model": "iris/1.0.0, iris/2.0.0", "X-Model-Sha256": A}, "names 2 models and X-Model-Sha256 1 digests"),
])
def test_headers_that_name_no_model_or_do_not_pair_up_are_refused(headers, message):
    with pytest.raises(RequestError, match=message):
        sources_of(headers)
