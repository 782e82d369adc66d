"""The batch job's inputs and output file, without a lattice: what is read as a row, under which
key, and how an output file left by a stopped run is resumed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlcloud.batch.journal import Journal, error_line, result_line
from mlcloud.batch.sources import InputError, SourceKind, chunks, open_source, sequence_rows


def test_a_folder_is_its_images_and_below_keyed_by_their_path_in_it_sorted(tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"B")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.PNG").write_bytes(b"A")
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(tmp_path)
    assert (source.kind, source.total) == (SourceKind.IMAGES, 2)
    assert [(row.key, row.image) for row in source.rows()] == [("b.jpg", b"B"), ("sub/a.PNG", b"A")]


def test_a_csv_row_is_keyed_by_its_number_with_numbers_as_numbers_and_a_short_row_as_a_problem(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("x, y\n1,2.5\n3,n/a\n4\n")
    source = open_source(path)
    assert (source.kind, source.total) == (SourceKind.ROWS, 3)
    rows = list(source.rows())
    assert [(r.key, r.instance) for r in rows[:2]] == [(1, {"x": 1, "y": 2.5}), (2, {"x": 3, "y": "n/a"})]
    assert rows[2].key == 3 and rows[2].problem == "row 3: 1 fields, the header has 2"


def test_a_jsonl_line_is_an_instance_by_line_number_or_a_keyed_row_and_a_broken_line_a_problem(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('[1, 2]\n\n{"key": "a-7", "instance": {"x": 1}}\n{"x": 2}\n{oops\n')
    rows = list(open_source(path).rows())
    assert [(r.key, r.instance) for r in rows[:3]] == [(1, [1, 2]), ("a-7", {"x": 1}), (4, {"x": 2})]
    assert rows[3].key == 5 and rows[3].problem.startswith("line 5 is not JSON")


@pytest.mark.parametrize("name, content, message", [
    ("missing.csv", None, "no such file or folder"),
    ("", None, "no images"),
    ("t.txt", b"x", "give a folder of images, a .csv file or a .jsonl"),
    ("e.csv", b"", "the first line must name the features"),
    ("b.csv", b"\xff\xfe\x00x", "cannot read it"),
])
def test_an_input_that_cannot_be_read_is_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        open_source(path)


def test_rows_in_memory_are_keyed_by_their_index_a_dataframe_by_feature_name():
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, 4.0]}, index=[10, 11])
    assert [(r.key, r.instance) for r in sequence_rows(frame).rows()] == [(10, {"x": 1.0, "y": 3.0}),
                                                                          (11, {"x": 2.0, "y": 4.0})]
    assert [(r.key, r.instance) for r in sequence_rows(np.eye(2)).rows()] == [(0, [1.0, 0.0]), (1, [0.0, 1.0])]
    assert [len(c) for c in chunks(iter(sequence_rows(np.zeros((5, 2))).rows()), 2)] == [2, 2, 1]


def test_a_resumed_output_skips_its_rows_and_cuts_off_a_last_line_cut_short(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(result_line("a.jpg", 200, "m/1", [1])) + "\n"
                   + json.dumps(error_line("b.jpg", 400, "RequestError", "bad")) + "\n" + '{"key": "c.jpg", "sta')
    journal = Journal(out).open()
    assert (journal.finished, journal.failed_before) == ({"a.jpg", "b.jpg"}, 1)
    journal.write(result_line("c.jpg", 200, "m/1", [3]))
    journal.close()
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == ["a.jpg", "b.jpg", "c.jpg"]


def test_retry_failed_takes_the_failed_lines_out_so_no_key_is_written_twice(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(result_line(1, 200, "m/1", 0)) + "\n"
                   + json.dumps(error_line(2, 503, "ModelLoading", "loading")) + "\n")
    journal = Journal(out, retry_failed=True).open()
    journal.close()
    assert (journal.finished, journal.failed_before) == ({1}, 0)
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == [1]


def test_an_output_file_that_is_not_results_is_left_alone(tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("my notes\nmore notes\n")
    with pytest.raises(InputError, match="line 1 is not a result line"):
        Journal(out).open()
    assert out.read_text() == "my notes\nmore notes\n"
