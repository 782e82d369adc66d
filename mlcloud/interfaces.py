"""The message types and operations of the lattice's contracts, defined once for actors,
providers and tests.

Types are ``msgspec.Struct``s whose wire names are the camelCase names of the original wasmCloud
interfaces (``queryString``, ``statusCode``, ``valueTypes``). They are encoded as msgpack on the
lattice; bytes stay bytes (no base64). The HTTP API's JSON form of a tensor (``data`` as a list
of byte values, as the original's serde output) is produced by :meth:`Tensor.to_json`.

Each operation is an :class:`Op`: its wire name (as wasmCloud's generated interfaces name it),
the request it takes and the reply it gives. Components register handlers and make calls with
these values, so a chain of calls is checked against the types when it is built
(:mod:`mlcloud.sdk.chain`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

if TYPE_CHECKING:
    import numpy as np

from mlcloud.errors import CorruptInputTensor

# Capability contract ids.
HTTPSERVER = "wasmcloud:httpserver"
MLINFERENCE = "wasmcloud:mlinference"


class _Wire(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    """Base of every message: camelCase on the wire, unknown fields ignored."""


class HttpRequest(_Wire):
    method: str
    path: str
    query_string: str = ""
    header: dict[str, str] = {}
    body: bytes = b""


class HttpResponse(_Wire):
    status_code: int = 200
    header: dict[str, str] = {}
    body: bytes = b""


class ValueType(enum.StrEnum):
    """Tensor element types with the numpy dtype each one is carried as (little-endian)."""

    ValueF16 = "ValueF16"
    ValueF32 = "ValueF32"
    ValueF64 = "ValueF64"
    ValueU8 = "ValueU8"
    ValueU16 = "ValueU16"
    ValueU32 = "ValueU32"
    ValueU64 = "ValueU64"
    ValueS8 = "ValueS8"
    ValueS16 = "ValueS16"
    ValueS32 = "ValueS32"
    ValueS64 = "ValueS64"
    ValueBool = "ValueBool"

    @property
    def dtype(self) -> np.dtype:
        import numpy as np  # here, not at the top: the api actor and HTTP server never need numpy

        return np.dtype(_DTYPES[self])

    @classmethod
    def from_dtype(cls, dtype: np.dtype) -> ValueType:
        import numpy as np

        for value_type, name in _DTYPES.items():
            if np.dtype(name) == np.dtype(dtype).newbyteorder("<"):
                return value_type
        raise CorruptInputTensor(f"no tensor value type carries numpy dtype {dtype}")


_DTYPES = {
    ValueType.ValueF16: "<f2",
    ValueType.ValueF32: "<f4",
    ValueType.ValueF64: "<f8",
    ValueType.ValueU8: "u1",
    ValueType.ValueU16: "<u2",
    ValueType.ValueU32: "<u4",
    ValueType.ValueU64: "<u8",
    ValueType.ValueS8: "i1",
    ValueType.ValueS16: "<i2",
    ValueType.ValueS32: "<i4",
    ValueType.ValueS64: "<i8",
    ValueType.ValueBool: "?",
}


class Tensor(_Wire):
    dimensions: list[int]
    value_types: list[ValueType]
    flags: int = 0
    data: bytes = b""

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> Tensor:
        import numpy as np

        value_type = ValueType.from_dtype(array.dtype)
        contiguous = np.ascontiguousarray(array, dtype=value_type.dtype)
        return cls(dimensions=list(array.shape), value_types=[value_type], data=contiguous.tobytes())

    def to_numpy(self) -> np.ndarray:
        """A read-only view of ``data``; raises CorruptInputTensor when sizes disagree."""
        import numpy as np

        if len(self.value_types) != 1:
            raise CorruptInputTensor(f"expected one value type, got {len(self.value_types)}")
        dtype = self.value_types[0].dtype
        count = int(np.prod(self.dimensions, dtype=np.int64)) if self.dimensions else 1
        if count * dtype.itemsize != len(self.data):
            raise CorruptInputTensor(
                f"tensor of dimensions {self.dimensions} and type {self.value_types[0]} needs "
                f"{count * dtype.itemsize} bytes, got {len(self.data)}"
            )
        return np.frombuffer(self.data, dtype=dtype).reshape(self.dimensions)

    def to_json(self) -> dict[str, Any]:
        """The original project's JSON form: ``data`` as a list of byte values."""
        return {
            "dimensions": list(self.dimensions),
            "valueTypes": [str(v) for v in self.value_types],
            "flags": self.flags,
            "data": list(self.data),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Tensor:
        """Parse the JSON form; ``data`` may be a list of byte values or a base64 string."""
        try:
            if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                obj = {**obj, "data": bytes(obj["data"])}
            return msgspec.convert(obj, cls, strict=False)
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            raise CorruptInputTensor(f"invalid tensor: {exc}") from exc


class InferenceInput(_Wire):
    model: str
    tensor: Tensor
    index: int = 0


class ModelSource(_Wire):
    """Which model produced an answer: its bindle and the sha256 of the model parcel that ran,
    as the mlinference provider knows them at that inference (HTTP ``X-Model``, ``X-Model-Sha256``;
    ``mlcloud verify`` checks them against the bindle's invoice)."""

    bindle_id: str
    sha256: str = ""


class InferenceOutput(_Wire):
    result: str = "Success"
    tensor: Tensor | None = None
    source: ModelSource | None = None

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result, "tensor": self.tensor.to_json() if self.tensor else None}


class PreprocessRequest(_Wire):
    """Image bytes and the input the model expects (from the model's metadata)."""

    image: bytes
    dimensions: list[int] = msgspec.field(default_factory=lambda: [1, 3, 224, 224])
    value_type: ValueType = ValueType.ValueF32
    model: str = ""  # the route it is for: the ``model`` label of the stage's figures


class PostprocessRequest(_Wire):
    tensor: Tensor
    top: int = 5
    model: str = ""  # the route it is for: the ``model`` label of the stage's figures
    source: ModelSource | None = None  # the model that made ``tensor``, carried on into the Ranking


class Match(_Wire):
    label: str
    probability: float


class Ranking(_Wire):
    """The postprocess actor's answer: the top matches, most likely first, and the model they came from."""

    matches: list[Match]
    source: ModelSource | None = None


class ModelStatusRequest(_Wire):
    model: str = ""  # empty: every model linked to the caller
    actor: str = ""  # whose link's models, when the provider's host asks (an actor asks for its own)


class ModelState(enum.StrEnum):
    """A model's life in the mlinference provider's registry (a str, so ``state == "READY"`` holds)."""

    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"


class TensorInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One declared input or output of a model, as ``GET /models/{m}`` shows it.

    Named as the HTTP API's JSON names it (snake_case, on the wire too, as when it was a dict).
    ``shape`` is None when the rank is unknown, and -1 marks a symbolic dimension; ``datatype``
    is a :class:`ValueType` name, or the numpy dtype when no value type carries it.
    ``image_datatype`` is set when images may come as that type instead (8-bit pixels that the
    provider normalises, :mod:`mlcloud.inference.pixels`).
    """

    name: str
    shape: list[int] | None
    datatype: str
    image_datatype: ValueType | None = None


class ModelInfo(_Wire):
    """What the api actor reports on ``GET /models/{m}`` and the washboard shows."""

    name: str
    bindle_id: str
    engine: str = ""
    state: ModelState = ModelState.LOADING
    reason: str = ""
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    feature_names: list[str] = []  # a tabular model's input columns (metadata ``feature_names``)
    sha256: str = ""  # of the model parcel serving the route (what ``X-Model-Sha256`` names)
    # Serving figures over the last minute, filled in by the mlinference provider from its
    # Prometheus metrics (providers/mlinference/metrics.py).
    requests: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    load_seconds: float = 0.0  # how long the serving model's load took (fetch, load, warm-up)


class RepositoryRequest(_Wire):
    """A model repository operation (``/v2/repository/…``, ``mlcloud models load``): the route,
    and for a load the bindle to serve it with (empty: the route's own, or a bindle of that name)."""

    model: str = ""
    bindle_id: str = ""
    actor: str = ""  # whose link, when the provider's host asks (an actor asks for its own)


class RepositoryModel(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of the repository index: a route and the bindle it serves, or a bindle that no
    route serves (``name`` is then the bindle's name). ``state`` None: not loaded. Snake_case on
    the wire too, as the CLI's and the washboard's JSON show it."""

    name: str
    bindle_id: str
    state: ModelState | None = None
    reason: str = ""


class LabelsRequest(_Wire):
    """The class labels the postprocess actor ranks with (no fields: it has one set)."""


Req = TypeVar("Req")
Rep = TypeVar("Rep")


@dataclass(frozen=True, slots=True)
class Op(Generic[Req, Rep]):
    """An operation: its name on the wire, the type of its request and of its reply.

    ``object`` as a type means plain msgpack values (test components, health checks).
    ``idempotent``: running it twice gives the same answer and changes nothing, so a call that
    failed because its server died or was restarting is made again (:class:`~mlcloud.lattice.rpc.RpcClient`).
    """

    name: str
    request: type[Req]
    reply: type[Rep]
    idempotent: bool = False


HANDLE_REQUEST = Op("HttpServer.HandleRequest", HttpRequest, HttpResponse)
PREDICT = Op("MlInference.Predict", InferenceInput, InferenceOutput, idempotent=True)
MODEL_STATUS = Op("MlInference.Status", ModelStatusRequest, list[ModelInfo])
PREPROCESS = Op("Preprocess.Convert", PreprocessRequest, Tensor, idempotent=True)
POSTPROCESS = Op("Postprocess.Matches", PostprocessRequest, Ranking, idempotent=True)
LABELS = Op("Postprocess.Labels", LabelsRequest, list[str], idempotent=True)
REPOSITORY_INDEX = Op("MlInference.RepositoryIndex", RepositoryRequest, list[RepositoryModel])
LOAD_MODEL = Op("MlInference.Load", RepositoryRequest, RepositoryModel)
UNLOAD_MODEL = Op("MlInference.Unload", RepositoryRequest, RepositoryModel)

T = TypeVar("T")

encoder = msgspec.msgpack.Encoder()


def encode(message: Any) -> bytes:
    return encoder.encode(message)


def decode(data: bytes | Any, type_: type[T]) -> T:
    """Decode msgpack bytes, or convert an already decoded object, into ``type_``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return msgspec.msgpack.decode(data, type=type_)
    return msgspec.convert(data, type_)
