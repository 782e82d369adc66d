"""Which model answered, checked: ``mlcloud verify`` and ``mlcloud.verify(headers)``.

Every inference answer names the model that made it in two headers, as the mlinference provider
said when it answered: ``X-Model``, the bindle id (``iris/1.0.0``), and ``X-Model-Sha256``, the
sha256 of the model file that ran (during a swap an answer of several models lists each, in the
same order in both). Verifying an answer asks the Bindle server for that bindle's invoice and
checks, for each model named:

1. the invoice exists (and is not yanked);
2. it passes the same signature check the provider makes before it loads a model
   (:func:`~mlcloud.bindle.signing.verify_invoice` against the trusted creators,
   :func:`~mlcloud.inference.creator_keyring`): every signature verifies and a trusted account
   signed it as creator, so nobody changed the parcels' sha256 after it was pushed;
3. the answer's sha256 is the invoice's parcel of group ``model``.

So a pass says: the bytes that produced this answer are the ones a trusted account signed under
that name and version. It is a check of what the answer claims; an answer whose headers were
forged by someone who also controls the serving lattice is not caught (docs/security.md).

    verdicts = mlcloud.verify(response.headers)   # or verify_async; any Mapping of headers
    assert all(v.ok for v in verdicts)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlcloud.bindle.errors import InvoiceNotFound, SignatureInvalid
from mlcloud.bindle.signing import verify_invoice
from mlcloud.errors import RequestError
from mlcloud.interfaces import ModelSource
from mlcloud.settings import Settings

HEADER_MODEL = "X-Model"
HEADER_SHA256 = "X-Model-Sha256"


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool


@dataclass(frozen=True)
class Verdict:
    """The checks of one model an answer names; ``ok`` when every one passed."""

    source: ModelSource
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def sources_of(headers: Mapping[str, str]) -> list[ModelSource]:
    """The models an answer's headers name; a RequestError when they name none or do not pair up."""
    lowered = {k.lower(): v for k, v in headers.items()}
    models = _listed(lowered.get(HEADER_MODEL.lower(), ""))
    digests = _listed(lowered.get(HEADER_SHA256.lower(), ""))
    if not models or not digests:
        raise RequestError(f"the answer has no {HEADER_MODEL} and {HEADER_SHA256} headers: "
                           "not an inference answer of mlcloud (or one from before they existed)")
    if len(models) != len(digests):
        raise RequestError(f"{HEADER_MODEL} names {len(models)} models and {HEADER_SHA256} {len(digests)} digests")
    return [ModelSource(bindle_id=m, sha256=d.lower()) for m, d in zip(models, digests, strict=True)]


def _listed(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_saved_headers(text: str) -> dict[str, str]:
    """The headers of a saved answer (``curl -D FILE`` or ``curl -i``): the last header block,
    since a redirect or a ``100 Continue`` writes one block each."""
    headers: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("HTTP/"):
            headers = {}
        elif not line.strip() and headers:
            break  # the body of ``curl -i`` follows
        else:
            name, sep, value = line.partition(":")
            if sep and name.strip():
                headers[name.strip()] = value.strip()
    return headers


async def verify_async(headers: Mapping[str, str], *, settings: Settings | None = None) -> list[Verdict]:
    """One :class:`Verdict` per model the answer's ``headers`` name (see the module docstring)."""
    from mlcloud.bindle import AsyncClient
    from mlcloud.inference.fetch import MODEL_GROUP, creator_keyring

    settings = settings or Settings.from_env()
    sources = sources_of(headers)
    keyring = creator_keyring(settings)
    verdicts = []
    async with AsyncClient(settings.effective_bindle_url) as client:
        for source in sources:
            checks: list[Check] = []
            try:
                invoice = await client.get_invoice(source.bindle_id, yanked=True)
            except InvoiceNotFound:
                checks.append(Check(f"no invoice {source.bindle_id} on {settings.effective_bindle_url}", False))
                verdicts.append(Verdict(source, checks))
                continue
            checks.append(Check(f"invoice {invoice.id} is on {settings.effective_bindle_url}"
                                + (" but yanked" if invoice.yanked else ""), not invoice.yanked))
            try:
                verify_invoice(invoice, keyring)
            except SignatureInvalid as exc:
                checks.append(Check(exc.message, False))
            else:
                creators = ", ".join(s.by for s in invoice.signature or () if s.role == "creator")
                checks.append(Check(f"its signatures verify; signed as creator by trusted {creators}", True))
            models = [p.label for p in invoice.parcels
                      if p.conditions is not None and MODEL_GROUP in (p.conditions.member_of or ())]
            found = [label for label in models if label.sha256 == source.sha256]
            if found:
                checks.append(Check(f"sha256 {source.sha256} is its model parcel {found[0].name}", True))
            else:
                others = [p.label.name for p in invoice.parcels if p.label.sha256 == source.sha256]
                checks.append(Check(f"sha256 {source.sha256} is not the invoice's model parcel"
                                    + (f" (it is {others[0]}, of another group)" if others else ""), False))
            verdicts.append(Verdict(source, checks))
    return verdicts


def verify(headers: Mapping[str, str], *, settings: Settings | None = None) -> list[Verdict]:
    """:func:`verify_async` for a notebook or a script."""
    from mlcloud.deployment import run_blocking

    return run_blocking(lambda: verify_async(headers, settings=settings))
