"""What a batch job scores, row by row, each under a stable key (:func:`open_source`).

    a folder          every image in it and below (.jpg .jpeg .png .gif .bmp .webp), sorted;
                      key: the path inside the folder (``cats/a.jpg``)
    FILE.csv          a header of feature names, then one row per line; key: the row number (1 = the
                      first row under the header). Cells that read as numbers are sent as numbers,
                      any other cell as it is (the model's 400 then names the field)
    FILE.jsonl        one instance per line (a list of numbers or an object keyed by feature name),
                      key: the line number; or a keyed row ``{"key": K, "instance": …}``, key: K
    a sequence        (the Python API) rows of a list, a NumPy array or a DataFrame; key: the index

A row that cannot be read (an unreadable file, a line that is not JSON, a CSV row of the wrong
width) is still a row: it carries its ``problem``, and the job writes it as failed.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from mlcloud.errors import RequestError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})
CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
Key = str | int


class InputError(RequestError):
    """The batch's input cannot be read as a whole (missing, empty, of an unknown kind)."""


class SourceKind(Enum):
    IMAGES = "images"  # each row an image for the model's image route
    ROWS = "rows"  # each row an instance for the model's /predict


@dataclass(frozen=True)
class Row:
    key: Key
    image: bytes = b""
    instance: Any = None
    problem: str = ""  # why the row cannot be sent; the job writes it as failed


@dataclass(frozen=True)
class Source:
    """A batch's input: its kind, how many rows it has and the rows themselves (read lazily)."""

    kind: SourceKind
    name: str
    total: int
    read: Callable[[], Iterator[Row]]

    def rows(self) -> Iterator[Row]:
        return self.read()


def open_source(path: Path) -> Source:
    """The input at ``path`` by its kind (see the module docstring); :class:`InputError` if unusable."""
    if path.is_dir():
        return image_folder(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return csv_rows(path)
    if suffix in JSONL_SUFFIXES:
        return jsonl_rows(path)
    raise InputError(f"{path}: give a folder of images, a .csv file or a .jsonl file")


def image_folder(folder: Path) -> Source:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")

    def read() -> Iterator[Row]:
        for file in files:
            key = file.relative_to(folder).as_posix()
            try:
                yield Row(key, image=file.read_bytes())
            except OSError as exc:
                yield Row(key, problem=f"cannot read {key}: {exc.strerror or exc}")

    return Source(SourceKind.IMAGES, str(folder), len(files), read)


@contextlib.contextmanager
def _lines(path: Path) -> Iterator[Iterator[str]]:
    """The file's lines, read as they are used (an input may be larger than memory)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            yield iter(file)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from exc


def csv_rows(path: Path) -> Source:
    with _lines(path) as lines:
        header = next(csv.reader(lines), None)
        if not header or not any(name.strip() for name in header):
            raise InputError(f"{path}: the first line must name the features (a CSV header)")
        total = sum(1 for _ in csv.reader(lines))
    names = [name.strip() for name in header]

    def read() -> Iterator[Row]:
        with _lines(path) as lines:
            reader = csv.reader(lines)
            next(reader, None)
            for number, cells in enumerate(reader, start=1):
                if len(cells) != len(names):
                    yield Row(number, problem=f"row {number}: {len(cells)} fields, the header has {len(names)}")
                else:
                    yield Row(number, instance={name: _number(cell) for name, cell in zip(names, cells, strict=True)})

    return Source(SourceKind.ROWS, str(path), total, read)


def _number(cell: str) -> Any:
    """A CSV cell as an int or a float when it reads as one; otherwise the text, for the model to refuse."""
    text = cell.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return cell


def jsonl_rows(path: Path) -> Source:
    with _lines(path) as lines:
        total = sum(1 for line in lines if line.strip())

    def read() -> Iterator[Row]:
        with _lines(path) as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield _jsonl_row(number, line)

    return Source(SourceKind.ROWS, str(path), total, read)


def _jsonl_row(number: int, line: str) -> Row:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return Row(number, problem=f"line {number} is not JSON: {exc.msg} (column {exc.colno})")
    if isinstance(value, dict) and set(value) == {"key", "instance"}:
        key = value["key"]
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            return Row(number, problem=f"line {number}: the key must be a string or a whole number")
        return Row(key, instance=value["instance"])
    return Row(number, instance=value)


def sequence_rows(data: Any) -> Source:
    """Rows of a list, a NumPy array or a pandas DataFrame (columns: the feature names), keyed by index."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a DataFrame: rows keyed by feature name
        records: list[Any] = data.to_dict(orient="records")
        keys: list[Any] = list(data.index)
    else:
        records = data.tolist() if hasattr(data, "tolist") else list(data)
        keys = list(range(len(records)))
    if not records:
        raise InputError("no rows to score")

    def read() -> Iterator[Row]:
        for key, record in zip(keys, records, strict=True):
            yield Row(_plain(key), instance=record)

    return Source(SourceKind.ROWS, "rows", len(records), read)


def _plain(key: Any) -> Key:
    """A DataFrame's index value (NumPy integer, Timestamp, …) as a JSON key."""
    if isinstance(key, (str, int)) and not isinstance(key, bool):
        return key
    if hasattr(key, "item") and isinstance(key.item(), int):
        plain: int = key.item()
        return plain
    return str(key)


def chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    """Up to ``size`` consecutive rows at a time."""
    while chunk := list(itertools.islice(rows, size)):
        yield chunk
