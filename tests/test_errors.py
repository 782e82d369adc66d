"""How an error becomes an HTTP answer: one place decides status, headers and body."""

from __future__ import annotations

from mlcloud.errors import MethodNotAllowed, ModelLoading, NoResponders, NotFound, Unauthorized


def test_a_503_asks_the_client_to_retry_after_the_errors_own_delay_or_one_second() -> None:
    assert ModelLoading("still loading", retry_after=3).to_http().headers == {"Retry-After": "3"}
    status, headers, body = NoResponders("nobody").to_http()
    assert (status, headers) == (503, {"Retry-After": "1"})
    assert body == {"error": {"kind": "NoResponders", "message": "nobody"}}


def test_a_405_names_the_allowed_methods_and_other_errors_carry_no_headers() -> None:
    assert MethodNotAllowed("no", allow="GET, HEAD").to_http().headers == {"Allow": "GET, HEAD"}
    assert NotFound("gone").to_http() == (404, {}, {"error": {"kind": "NotFound", "message": "gone"}})


def test_a_401_asks_for_a_bearer_token() -> None:
    assert Unauthorized("no key").to_http() == (
        401, {"WWW-Authenticate": "Bearer"}, {"error": {"kind": "Unauthorized", "message": "no key"}})
