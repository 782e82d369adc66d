"""``mlcloud predict`` and ``mlcloud.predict`` against the real stack: a folder of images, a CSV
scored by a deployed scikit-learn model, failed rows written with their error, and a run stopped
by Ctrl-C that resumes without repeating a row. The CLI runs as a subprocess, as a user runs it
(the stack's host shares this test's event loop)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import mlcloud
from mlcloud.bench.batch import compare
from mlcloud.testing.stack import PROJECT_DIR

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

IMAGES = sorted((PROJECT_DIR / "images").glob("*.jpg"))
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


async def predict(stack, *args: str, interrupt_after: int | None = None, out: Path | None = None) -> tuple[int, str]:
    """``mlcloud predict`` against the stack: (exit status, stderr); with ``interrupt_after``, Ctrl-C
    (SIGINT) once ``out`` holds that many lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mlcloud.cli", "predict", "--url", stack.http_url, *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    if interrupt_after is not None:
        assert out is not None
        while process.returncode is None and len(lines(out)) < interrupt_after:
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def iris(stack):
    """An iris classifier fitted on a DataFrame (its columns become the route's feature names)."""
    X, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(X, columns=FEATURES)
    model = LogisticRegression(max_iter=500).fit(frame, y)
    await asyncio.to_thread(mlcloud.deploy, model, "iris", sample=frame[:5], settings=stack.settings,
                            progress=lambda _: None)
    return frame, model


async def test_a_folder_of_images_is_scored_with_each_file_keyed_and_a_broken_one_failed_with_its_error(
        stack, tmp_path):
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for image in IMAGES:
        shutil.copy(image, folder / image.name)
    shutil.copy(IMAGES[0], folder / "more" / "again.jpg")
    (folder / "broken.jpg").write_bytes(b"not a JPEG at all")
    out = tmp_path / "labels.jsonl"

    status, stderr = await predict(stack, "--model", "mobilenetv27", str(folder), "--out", str(out), "--top", "3")

    assert status == 1 and "6 done, 1 failed" in stderr and "--retry-failed" in stderr
    found = {line["key"]: line for line in lines(out)}
    assert sorted(found) == sorted([i.name for i in IMAGES] + ["more/again.jpg", "broken.jpg"])
    assert "cat" in found["cat.jpg"]["result"][0]["label"] and len(found["cat.jpg"]["result"]) == 3
    assert found["cat.jpg"]["model"] == "efficientnet-lite0/1.0.0"
    assert found["more/again.jpg"]["result"] == found[IMAGES[0].name]["result"]
    broken = found["broken.jpg"]
    assert 400 <= broken["status"] < 500 and broken["error"]["kind"] and broken["error"]["message"]


async def test_a_csv_is_scored_in_requests_of_rows_and_a_bad_row_fails_alone_with_the_field_named(
        stack, iris, tmp_path):
    frame, model = iris
    csv = tmp_path / "iris.csv"
    frame.to_csv(csv, index=False)
    with csv.open("a") as file:
        file.write("5.1,n/a,1.4,0.2\n5.1,3.5\n")
    out = tmp_path / "scores.jsonl"

    status, stderr = await predict(stack, "--model", "iris", str(csv), "--out", str(out), "--rows-per-request", "16",
                                   "-c", "4")

    assert status == 1 and "150 done, 2 failed" in stderr
    found = {line["key"]: line for line in lines(out)}
    assert len(found) == len(lines(out)) == 152
    assert [found[n]["result"] for n in range(1, 151)] == model.predict(frame).tolist()
    assert found[151]["status"] == 400 and "sepal_width" in found[151]["error"]["message"]
    assert found[152] == {"key": 152, "status": None,
                          "error": {"kind": "InputError", "message": "row 152: 2 fields, the header has 4"}}

    status, stderr = await predict(stack, "--model", "iris", str(csv), "--out", str(out), "--retry-failed")
    assert status == 1 and "0 done, 2 failed" in stderr and "150 finished before" in stderr
    assert sorted(line["key"] for line in lines(out)) == list(range(1, 153))


async def test_a_run_stopped_by_ctrl_c_resumes_without_repeating_a_row(stack, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(12):
        for image in IMAGES:
            shutil.copy(image, folder / f"{n:02d}-{image.name}")
    out = tmp_path / "labels.jsonl"

    status, stderr = await predict(stack, "--model", "mobilenetv27", str(folder), "--out", str(out), "-c", "2",
                                   interrupt_after=5, out=out)
    assert status == 130 and "interrupted" in stderr and "run the same command again" in stderr
    first = lines(out)
    assert 5 <= len(first) < 60
    with out.open("a") as file:
        file.write('{"key": "00-cat.jpg", "stat')  # as if killed mid-line: cut off on resume

    status, stderr = await predict(stack, "--model", "mobilenetv27", str(folder), "--out", str(out))
    assert status == 0, stderr
    assert f"{len(first)} finished before" in stderr
    keys = [line["key"] for line in lines(out)]
    assert len(keys) == len(set(keys)) == 60 and set(keys) == {p.name for p in folder.iterdir()}
    assert lines(out)[:len(first)] == first


async def test_an_unknown_model_or_a_model_for_other_input_fails_before_any_row(stack, iris, tmp_path):
    out = tmp_path / "out.jsonl"
    status, stderr = await predict(stack, "--model", "nope", str(PROJECT_DIR / "images"), "--out", str(out))
    assert status == 1 and "ContextNotFound: no model 'nope'" in stderr
    status, stderr = await predict(stack, "--model", "iris", str(PROJECT_DIR / "images"), "--out", str(out))
    assert status == 1 and "takes rows of features, not images" in stderr
    assert lines(out) == []


async def test_mlcloud_predict_scores_rows_in_memory_in_their_order(stack, iris):
    frame, model = iris
    sample = frame.sample(40, random_state=0)
    summary = await asyncio.to_thread(mlcloud.predict, "iris", sample, settings=stack.settings, url=stack.http_url,
                                      rows_per_request=7, progress=False)
    assert (summary.done, summary.failed) == (40, 0)
    assert [line["key"] for line in summary.lines] == list(sample.index)
    assert [line["result"] for line in summary.lines] == model.predict(sample).tolist()
    probabilities = await asyncio.to_thread(mlcloud.predict, "iris", sample.to_numpy()[:3], url=stack.http_url,
                                            proba=True, progress=False)
    np.testing.assert_allclose([line["result"] for line in probabilities.lines],
                               model.predict_proba(sample[:3]), rtol=1e-3, atol=1e-4)


async def test_the_batch_bench_measures_both_paths_in_turns(stack, tmp_path):
    comparison = await compare(stack.http_url, tmp_path, concurrency=2, requests=6, rounds=2)
    assert len(comparison.http) == len(comparison.batch) == 2 and comparison.batch_failed == 0
    assert min(comparison.http + comparison.batch) > 0 and comparison.ratio > 0
    assert comparison.to_json()["target"] == 0.9 and "batch / HTTP" in str(comparison)
