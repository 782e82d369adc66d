"""The Open Inference Protocol (KServe "v2", as Triton speaks it) ↔ mlcloud's lattice types.

Pure functions, no I/O: the api actor routes ``/v2/…`` and calls these to read and write bodies;
the httpserver provider uses :func:`is_oip_path` and :func:`error_reply` for the errors it answers
itself. Numbers are packed with :mod:`struct` (numpy stays out of the api actor).

* **Datatypes**: each :class:`~mlcloud.interfaces.ValueType` has its protocol name
  (``ValueF32`` ↔ ``FP32``). ``BYTES`` has no lattice type: its only use here is an image model's
  input (raw JPEG/PNG bytes, one image per element), which the preprocess actor turns into the
  model's tensor. ``BF16`` and anything else unknown is a 400.
* **Tensors in JSON**: ``data`` is the row-major list (flat or nested) of the shape's elements;
  BOOL as ``true``/``false``, BYTES as strings (UTF-8).
* **Binary tensor data extension**: with ``Inference-Header-Content-Length: n`` the first n bytes
  of the body are the JSON header and the rest the inputs whose ``binary_data_size`` parameter is
  set, in input order, little-endian; BYTES elements are each a 4-byte little-endian length then
  the bytes. An output asked for with ``binary_data: true`` (or every output, with the request
  parameter ``binary_data_output: true``, tritonclient's default) is answered the same way.
* **Classification extension**: ``"classification": k`` on an output answers BYTES of shape
  ``[batch, k]`` (``[k]`` for an output without a batch dimension), the k highest values of each
  row as ``"<value>:<index>[:<label>]"``, the raw output value (no softmax) printed as C's
  ``%f`` for floats, as Triton does.
* **Errors** on protocol routes are ``{"error": "message"}`` with the status and headers of the
  error's class (:meth:`~mlcloud.errors.MLCloudError.to_http`).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from mlcloud.errors import CorruptInputTensor, HttpErrorReply, InvalidEncoding, MLCloudError, RequestError
from mlcloud.interfaces import Tensor, ValueType

PREFIX = "v2"
BYTES = "BYTES"
HEADER_LENGTH = "inference-header-content-length"  # lower case, as the api actor sees headers
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]

DATATYPES: dict[ValueType, str] = {
    ValueType.ValueBool: "BOOL",
    ValueType.ValueU8: "UINT8",
    ValueType.ValueU16: "UINT16",
    ValueType.ValueU32: "UINT32",
    ValueType.ValueU64: "UINT64",
    ValueType.ValueS8: "INT8",
    ValueType.ValueS16: "INT16",
    ValueType.ValueS32: "INT32",
    ValueType.ValueS64: "INT64",
    ValueType.ValueF16: "FP16",
    ValueType.ValueF32: "FP32",
    ValueType.ValueF64: "FP64",
}
VALUE_TYPES = {name: value_type for value_type, name in DATATYPES.items()}
# struct's code of each type, and numpy's name for the types engines report without a ValueType.
_CODES = {
    ValueType.ValueBool: "?", ValueType.ValueU8: "B", ValueType.ValueU16: "H", ValueType.ValueU32: "I",
    ValueType.ValueU64: "Q", ValueType.ValueS8: "b", ValueType.ValueS16: "h", ValueType.ValueS32: "i",
    ValueType.ValueS64: "q", ValueType.ValueF16: "e", ValueType.ValueF32: "f", ValueType.ValueF64: "d",
}
_NUMPY_NAMES = {"object": BYTES, "str": BYTES, "bytes": BYTES, "bfloat16": "BF16"}


def is_oip_path(path: str) -> bool:
    """True for ``/v2`` and every path under it (however many slashes, as the api actor routes)."""
    parts = [p for p in path.split("/") if p]
    return parts[:1] == [PREFIX]


def error_reply(err: MLCloudError) -> HttpErrorReply:
    """The error as the protocol answers it: the class's status and headers, ``{"error": message}``."""
    reply = err.to_http()
    return HttpErrorReply(reply.status, reply.headers, {"error": err.message})


def datatype(name: str) -> str:
    """The protocol datatype of a :class:`~mlcloud.interfaces.TensorInfo` datatype (a ValueType
    name, or a numpy dtype name when no ValueType carries it)."""
    if name in ValueType.__members__:
        return DATATYPES[ValueType(name)]
    return _NUMPY_NAMES.get(name, name.upper())


def value_type(name: str) -> ValueType:
    try:
        return VALUE_TYPES[name]
    except KeyError:
        known = ", ".join([*VALUE_TYPES, BYTES])
        raise InvalidEncoding(f"datatype {name!r} is not served here; known: {known}") from None


# -- requests -----------------------------------------------------------------------------------


class RequestInput(msgspec.Struct, kw_only=True):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = {}
    data: Any = None


class RequestOutput(msgspec.Struct, kw_only=True):
    name: str
    parameters: dict[str, Any] = {}

    @property
    def classification(self) -> int:
        count = self.parameters.get("classification", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise RequestError(f"output {self.name!r}: classification must be a whole number, got {count!r}")
        return count


class InferRequest(msgspec.Struct, kw_only=True):
    id: str | None = None
    parameters: dict[str, Any] = {}
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None

    def binary_output(self, output: RequestOutput | None) -> bool:
        """Whether an output goes as binary data: its own ``binary_data``, else the request's
        ``binary_data_output``."""
        default = bool(self.parameters.get("binary_data_output", False))
        if output is None:
            return default
        return bool(output.parameters.get("binary_data", default))


class Input(msgspec.Struct):
    """A decoded input: a lattice tensor, or (BYTES) its elements."""

    name: str
    shape: list[int]
    datatype: str
    tensor: Tensor | None = None
    elements: list[bytes] | None = None


def parse_infer_request(body: bytes, header_length: str | None = None) -> tuple[InferRequest, list[Input]]:
    """The request and its inputs, JSON or binary; a 400 error for anything malformed."""
    json_part, binary = body, b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise RequestError(f"Inference-Header-Content-Length must be a number, got {header_length!r}") from None
        if not 0 <= length <= len(body):
            raise RequestError(f"Inference-Header-Content-Length {length} is outside the body of {len(body)} bytes")
        json_part, binary = body[:length], body[length:]
    try:
        request = msgspec.json.decode(json_part, type=InferRequest)
    except msgspec.DecodeError as exc:
        raise RequestError(f"the inference request is not valid JSON: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise RequestError(f"the inference request does not fit the protocol: {exc}") from exc
    if not request.inputs:
        raise RequestError("the inference request has no inputs")
    inputs, offset = [], 0
    for item in request.inputs:
        size = item.parameters.get("binary_data_size")
        if size is None:
            inputs.append(decode_json_input(item))
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise RequestError(f"input {item.name!r}: binary_data_size {size!r} does not fit the "
                               f"{len(binary) - offset} binary bytes left in the body")
        inputs.append(decode_binary_input(item, binary[offset:offset + size]))
        offset += size
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data are left over after the inputs")
    return request, inputs


def element_count(shape: Sequence[int], name: str) -> int:
    if any(isinstance(d, bool) or d < 0 for d in shape):
        raise CorruptInputTensor(f"input {name!r}: shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def decode_json_input(item: RequestInput) -> Input:
    if item.data is None:
        raise RequestError(f"input {item.name!r} has neither data nor binary_data_size")
    flat = list(_flatten(item.data))
    count = element_count(item.shape, item.name)
    if len(flat) != count:
        raise CorruptInputTensor(f"input {item.name!r} of shape {item.shape} needs {count} elements, got {len(flat)}")
    if item.datatype == BYTES:
        if not all(isinstance(e, str) for e in flat):
            raise InvalidEncoding(f"input {item.name!r}: BYTES elements in JSON are strings")
        return Input(item.name, item.shape, BYTES, elements=[e.encode() for e in flat])
    vt = value_type(item.datatype)
    try:
        data = struct.pack(f"<{count}{_CODES[vt]}", *flat)
    except (struct.error, TypeError, OverflowError) as exc:
        raise InvalidEncoding(f"input {item.name!r}: the data are not {item.datatype} values: {exc}") from exc
    tensor = Tensor(dimensions=item.shape, value_types=[vt], data=data)
    return Input(item.name, item.shape, item.datatype, tensor=tensor)


def decode_binary_input(item: RequestInput, raw: bytes) -> Input:
    count = element_count(item.shape, item.name)
    if item.datatype == BYTES:
        elements = unpack_bytes(raw, item.name)
        if len(elements) != count:
            raise CorruptInputTensor(f"input {item.name!r} of shape {item.shape} needs {count} elements, "
                                     f"got {len(elements)}")
        return Input(item.name, item.shape, BYTES, elements=elements)
    vt = value_type(item.datatype)
    needed = count * struct.calcsize(_CODES[vt])
    if len(raw) != needed:
        raise CorruptInputTensor(f"input {item.name!r} of shape {item.shape} and datatype {item.datatype} needs "
                                 f"{needed} bytes, got {len(raw)}")
    return Input(item.name, item.shape, item.datatype, tensor=Tensor(dimensions=item.shape, value_types=[vt], data=raw))


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def pack_bytes(elements: Sequence[bytes]) -> bytes:
    """BYTES elements in binary form: each a 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def unpack_bytes(raw: bytes, name: str = "") -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise CorruptInputTensor(f"input {name!r}: BYTES data end inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise CorruptInputTensor(f"input {name!r}: a BYTES element of {length} bytes runs past the data")
        elements.append(raw[offset:offset + length])
        offset += length
    return elements


# -- responses ----------------------------------------------------------------------------------


class Output(msgspec.Struct):
    """One response output: its JSON header and, when it goes as binary data, its bytes."""

    header: dict[str, Any]
    binary: bytes | None = None


def tensor_output(name: str, tensor: Tensor, binary: bool) -> Output:
    if len(tensor.value_types) != 1:
        raise CorruptInputTensor(f"output {name!r} has {len(tensor.value_types)} value types, not one")
    vt = tensor.value_types[0]
    header: dict[str, Any] = {"name": name, "datatype": DATATYPES[vt], "shape": list(tensor.dimensions)}
    if binary:
        header["parameters"] = {"binary_data_size": len(tensor.data)}
        return Output(header, tensor.data)
    header["data"] = list(_values(tensor))
    return Output(header)


def bytes_output(name: str, shape: list[int], elements: Sequence[bytes], binary: bool) -> Output:
    header: dict[str, Any] = {"name": name, "datatype": BYTES, "shape": shape}
    if binary:
        raw = pack_bytes(elements)
        header["parameters"] = {"binary_data_size": len(raw)}
        return Output(header, raw)
    header["data"] = [e.decode("utf-8", "replace") for e in elements]
    return Output(header)


def _values(tensor: Tensor) -> tuple[Any, ...]:
    code = _CODES[tensor.value_types[0]]
    size = struct.calcsize(code)
    if len(tensor.data) % size:
        raise CorruptInputTensor(f"tensor data of {len(tensor.data)} bytes is no whole number of {code!r} values")
    return struct.unpack(f"<{len(tensor.data) // size}{code}", tensor.data)


def encode_response(model: str, version: str, request_id: str | None,
                    outputs: Sequence[Output]) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON alone, or JSON then the binary outputs."""
    header: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        header["id"] = request_id
    header["outputs"] = [o.header for o in outputs]
    text = json.dumps(header).encode()
    blobs = [o.binary for o in outputs if o.binary is not None]
    if not blobs:
        return text, {"content-type": "application/json"}
    return b"".join([text, *blobs]), {"content-type": "application/octet-stream",
                                      HEADER_LENGTH: str(len(text))}


def classify(tensor: Tensor, count: int, labels: Sequence[str] = ()) -> tuple[list[int], list[bytes]]:
    """The classification extension's answer for an output: shape and ``value:index[:label]`` strings.

    The first dimension is the batch when there are two or more; each row's ``count`` highest
    values (ties: lower index first), as many as there are if fewer. ``labels`` name the classes
    when there is one per class; one fewer means class 0 is "background" (1001-class models).
    """
    values = _values(tensor)
    dims = list(tensor.dimensions)
    batch = dims[0] if len(dims) >= 2 else 1
    width = len(values) // batch if batch else 0
    count = min(count, width)
    offset = 1 if labels and width == len(labels) + 1 else 0
    named = bool(labels) and width == len(labels) + offset
    floating = tensor.value_types[0] in (ValueType.ValueF16, ValueType.ValueF32, ValueType.ValueF64)
    found: list[bytes] = []
    for row in range(batch):
        scores = values[row * width:(row + 1) * width]
        best = sorted(range(width), key=lambda i: (-scores[i], i))[:count]
        for i in best:
            text = f"{scores[i]:f}:{i}" if floating else f"{int(scores[i])}:{i}"
            if named and i >= offset:
                text += f":{labels[i - offset]}"
            found.append(text.encode())
    return ([batch, count] if len(dims) >= 2 else [count]), found


def concat(tensors: Sequence[Tensor]) -> Tensor:
    """Tensors of one type and equal trailing dimensions, joined along the first (the batch)."""
    first = tensors[0]
    if len(tensors) == 1:
        return first
    if any(t.value_types != first.value_types or t.dimensions[1:] != first.dimensions[1:] for t in tensors):
        raise CorruptInputTensor("the outputs of the batch's elements differ in type or shape")
    batch = sum(t.dimensions[0] for t in tensors)
    return Tensor(dimensions=[batch, *first.dimensions[1:]], value_types=first.value_types,
                  data=b"".join(t.data for t in tensors))


def version_of(bindle_id: str) -> str:
    """The version of a bindle id ``name/version`` (names may hold slashes; the version never does)."""
    return bindle_id.rpartition("/")[2]
