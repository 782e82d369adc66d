"""The output of a batch job, one JSON line per row, which is also what lets it resume.

    {"key": "cat.jpg", "status": 200, "model": "efficientnet-lite0/1.0.0", "result": [...]}
    {"key": 7, "status": 400, "error": {"kind": "RequestError", "message": "instances[0].x: 'n/a' is not a number"}}
    {"key": 9, "status": null, "error": {"kind": "InputError", "message": "row 9: 3 fields, the header has 4"}}

Lines come in the order rows finish, each written whole and flushed, so a run stopped any way
leaves every finished row on disk. Opening an existing file reads the keys it holds: those rows
are skipped (failed ones too, unless ``retry_failed`` takes their lines out to send them again).
A last line cut short (the process killed mid-write) is cut off; any other line that is not a
result line means the file is not this tool's output, and it is left alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from mlcloud.batch.sources import InputError, Key


def result_line(key: Key, status: int, model: str, result: Any) -> dict[str, Any]:
    return {"key": key, "status": status, "model": model, "result": result}


def error_line(key: Key, status: int | None, kind: str, message: str) -> dict[str, Any]:
    return {"key": key, "status": status, "error": {"kind": kind, "message": message}}


def is_failed(line: dict[str, Any]) -> bool:
    return "error" in line


class Journal:
    """Where the lines go: a file (:meth:`open`), or a list in memory (``path=None``, the Python API)."""

    def __init__(self, path: Path | None = None, *, retry_failed: bool = False) -> None:
        self.path = path
        self.retry_failed = retry_failed
        self.finished: set[Key] = set()  # keys the file held when opened (skipped by the job)
        self.failed_before = 0  # of those, failed rows kept as they are
        self.lines: list[dict[str, Any]] = []  # every line, when in memory
        self._file: IO[str] | None = None

    def open(self) -> Journal:
        if self.path is None:
            return self
        kept = self._read() if self.path.exists() else []
        if self.retry_failed and any(is_failed(line) for line in kept):
            kept = [line for line in kept if not is_failed(line)]
            self._rewrite(kept)
        self.finished = {line["key"] for line in kept}
        self.failed_before = sum(1 for line in kept if is_failed(line))
        try:
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write the results: {exc.strerror or exc}") from exc
        return self

    def _read(self) -> list[dict[str, Any]]:
        assert self.path is not None
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read the results so far: {exc.strerror or exc}") from exc
        lines, good_end = [], 0
        for number, raw in enumerate(data.splitlines(keepends=True), start=1):
            if not raw.endswith(b"\n"):
                break  # the last line, cut short: cut off below (a whole line ends with its newline)
            line = _parse(raw)
            if line is None and raw.strip():
                raise InputError(f"{self.path}: line {number} is not a result line of `mlcloud predict`; "
                                 "give another --out")
            if line is not None:
                lines.append(line)
            good_end += len(raw)
        if good_end < len(data):
            with self.path.open("r+b") as file:
                file.truncate(good_end)
        return lines

    def _rewrite(self, lines: list[dict[str, Any]]) -> None:
        assert self.path is not None
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w", encoding="utf-8") as file:
            file.writelines(_dumps(line) for line in lines)
        os.replace(partial, self.path)

    def write(self, line: dict[str, Any]) -> None:
        if self._file is None:
            self.lines.append(line)
            return
        self._file.write(_dumps(line))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _dumps(line: dict[str, Any]) -> str:
    return json.dumps(line, ensure_ascii=False) + "\n"


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        line = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(line, dict) or "key" not in line or ("result" not in line and "error" not in line):
        return None
    return line
