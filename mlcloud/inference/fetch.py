"""The registry's ``fetch`` backed by a Bindle server and the sha256-verified parcel cache.

A model bindle (as ``mlcloud models build`` writes them) has a parcel in group ``model`` (the
graph file) and one in group ``metadata`` (the JSON of DESIGN §5); other groups (``labels``) are
not the provider's business. Both parcels go through :class:`~mlcloud.inference.cache.ParcelCache`,
so a restarted provider loads from disk and only asks Bindle for the invoice.

Before any parcel is fetched, the invoice's signatures are checked against the keyring of
trusted creators (:func:`creator_keyring`): every signature must verify and a creator must be
trusted (:func:`~mlcloud.bindle.signing.verify_invoice`). The creator's signature covers every
parcel's sha256 and the cache checks each parcel against its sha256, so nothing that a trusted
account did not sign is loaded, whatever the Bindle server or its disk serve. An unsigned or
altered invoice fails the load with :class:`~mlcloud.errors.InvalidModel` saying why.

    async with AsyncClient(settings.effective_bindle_url) as client:
        fetch = bindle_fetcher(client, ParcelCache(settings.state_dir / "parcels"),
                               lambda: creator_keyring(settings))
        async with ModelRegistry(fetch, config) as registry:
            ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mlcloud.bindle.errors import SignatureInvalid
from mlcloud.bindle.signing import KeyRing, keyring_of_accounts, verify_invoice
from mlcloud.errors import InvalidModel
from mlcloud.inference.cache import ParcelCache
from mlcloud.settings import Settings
from mlcloud.trust import trusted_issuers

if TYPE_CHECKING:
    from mlcloud.bindle.client import AsyncClient
    from mlcloud.bindle.models import Invoice, Label
    from mlcloud.inference.registry import Fetch

MODEL_GROUP = "model"
METADATA_GROUP = "metadata"


def creator_keyring(settings: Settings) -> KeyRing:
    """The creators whose models load: the accounts trusted for artifacts (:mod:`mlcloud.trust`)."""
    return keyring_of_accounts(trusted_issuers(settings))


def bindle_fetcher(client: AsyncClient, cache: ParcelCache,
                   trusted_creators: Callable[[], KeyRing]) -> Fetch:
    """``fetch(bindle_id) -> (model path, metadata JSON bytes)`` for :class:`ModelRegistry`.

    ``trusted_creators`` is asked at each load, so trusting a key takes effect on the next one.
    """

    async def fetch(bindle_id: str) -> tuple[Path, bytes]:
        invoice = await client.get_invoice(bindle_id)
        try:
            verify_invoice(invoice, trusted_creators())
        except SignatureInvalid as exc:
            raise InvalidModel(exc.message) from exc
        model = _first_in_group(invoice, MODEL_GROUP)
        meta = _first_in_group(invoice, METADATA_GROUP)
        model_path = await cache.fetch(
            model.sha256, _stream(client, bindle_id, model.sha256), size=model.size
        )
        meta_path = await cache.fetch(
            meta.sha256, _stream(client, bindle_id, meta.sha256), size=meta.size
        )
        return model_path, await asyncio.to_thread(meta_path.read_bytes)

    return fetch


def _first_in_group(invoice: Invoice, group: str) -> Label:
    for parcel in invoice.parcels:
        if parcel.conditions is not None and group in (parcel.conditions.member_of or ()):
            return parcel.label
    raise InvalidModel(f"bindle {invoice.id} has no parcel in group {group!r}")


def _stream(client: AsyncClient, bindle_id: str, sha256: str) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        async with client.stream_parcel(bindle_id, sha256) as stream:
            async for chunk in stream:
                yield chunk

    return chunks
