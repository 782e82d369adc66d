"""The postprocess actor's logic: model output → top-k labels (actors/postprocess/topk.py)."""

from __future__ import annotations

import hashlib
import json

import msgspec
import numpy as np
import pytest

from mlcloud.errors import ConfigError, CorruptInputTensor, InferenceRuntimeError, RequestError
from mlcloud.interfaces import Match, PostprocessRequest, Tensor

SYNSET_SHA256 = "acf75ef0abe89694b19056e0796401068b459c457baa30335f240c7692857355"


@pytest.fixture(scope="module")
def labels(topk, imagenet_synset) -> list[str]:
    return topk.parse_synset(imagenet_synset)


def cat_logits() -> np.ndarray:
    """Logits whose softmax is Egyptian cat 0.8, tiger cat 0.08, tabby 0.07 (FACTS' chelsea)."""
    probs = np.full(1000, 0.05 / 997)
    probs[[285, 282, 281]] = [0.80, 0.08, 0.07]
    return (np.log(probs) + 3.7).astype(np.float32)  # logits are only defined up to a constant


def test_synset_fixture_is_the_model_zoo_file(imagenet_synset, labels):
    assert hashlib.sha256(imagenet_synset).hexdigest() == SYNSET_SHA256
    assert len(labels) == 1000
    assert labels[281] == "n02123045 tabby, tabby cat"
    assert labels[285] == "n02124075 Egyptian cat"


def test_top5_of_chelsea_like_logits(topk, labels):
    found = topk.top_k(cat_logits().reshape(1, 1000), labels)
    assert [m.label for m in found[:3]] == [
        "n02124075 Egyptian cat",
        "n02123159 tiger cat",
        "n02123045 tabby, tabby cat",
    ]
    assert len(found) == 5 and all(isinstance(m, Match) for m in found)
    assert [round(m.probability, 6) for m in found[:3]] == [0.8, 0.08, 0.07]
    probabilities = [m.probability for m in found]
    assert probabilities == sorted(probabilities, reverse=True)


def test_json_shape_is_the_originals(topk, labels):
    found = topk.top_k(cat_logits(), labels, 2)
    body = json.loads(msgspec.json.encode(found))
    assert body == topk.to_json(found)
    assert list(body[0]) == ["label", "probability"]
    assert body[0]["label"] == "n02124075 Egyptian cat"
    assert isinstance(body[0]["probability"], float)


@pytest.mark.parametrize("shape", [(1, 1000), (1, 1000, 1, 1), (1000,), (1, 1, 1000)])
def test_output_shapes(topk, labels, shape):
    tensor = Tensor.from_numpy(cat_logits().reshape(shape))
    found = topk.top_k(tensor, labels, 3)
    assert [m.label.split()[0] for m in found] == ["n02124075", "n02123159", "n02123045"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_types(topk, labels, dtype):
    tensor = Tensor.from_numpy(cat_logits().astype(dtype).reshape(1, 1000))
    assert topk.top_k(tensor, labels, 1)[0].label == "n02124075 Egyptian cat"


def test_background_class_of_1001_class_models_is_dropped(topk, labels):
    logits = np.concatenate([[50.0], cat_logits()]).astype(np.float32)  # background wins, ignored
    found = topk.top_k(logits.reshape(1, 1001), labels, 1)
    assert found[0].label == "n02124075 Egyptian cat"


def test_softmax_is_stable_and_correct(topk):
    logits = np.array([1000.0, 1001.0, 999.0, -1e30])
    probs = topk.softmax(logits)
    assert np.all(np.isfinite(probs)) and probs.sum() == pytest.approx(1.0)
    expected = np.exp([0.0, 1.0, -1.0]) / np.exp([0.0, 1.0, -1.0]).sum()
    np.testing.assert_allclose(probs[:3], expected, rtol=1e-12)
    assert probs[3] == 0.0


def test_probabilities_are_not_squashed_twice(topk, labels):
    probs = np.full(1000, 0.05 / 997, dtype=np.float32)
    probs[[285, 282, 281]] = [0.80, 0.08, 0.07]
    found = topk.top_k(probs.reshape(1, 1000, 1, 1), labels, 2)
    assert found[0].probability == pytest.approx(0.8, abs=1e-6)
    forced = topk.top_k(probs, labels, 1, softmax=True)
    assert forced[0].probability < 0.01  # what a second softmax does to a distribution
    assert topk.top_k(cat_logits(), labels, 1, softmax=False)[0].probability == pytest.approx(
        float(cat_logits()[285])
    )


def test_is_probability(topk):
    assert topk.is_probability(np.array([0.25, 0.25, 0.5]))
    assert not topk.is_probability(np.array([0.2, 0.2, 0.2]))
    assert not topk.is_probability(np.array([1.5, -0.5]))
    assert not topk.is_probability(cat_logits())


def test_ties_are_ordered_by_class_index(topk):
    labels = [f"class {i}" for i in range(10)]
    scores = np.zeros(10, dtype=np.float32)
    scores[[7, 2, 5]] = 3.0
    found = topk.top_k(scores, labels, 4)
    assert [m.label for m in found] == ["class 2", "class 5", "class 7", "class 0"]


def test_k_equal_to_classes_returns_all_sorted(topk):
    labels = ["a", "b", "c"]
    found = topk.top_k(np.array([1.0, 3.0, 2.0]), labels, 3)
    assert [m.label for m in found] == ["b", "c", "a"]
    assert sum(m.probability for m in found) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "k, expected",
    [(None, 5), ("", 5), ("3", 3), (" 7 ", 7), (1000, 1000), (np.int64(2), 2)],
)
def test_k_accepted(topk, k, expected):
    assert topk.validate_k(k, 1000) == expected


def test_default_k_is_capped_by_classes(topk):
    assert topk.validate_k(None, 3) == 3


@pytest.mark.parametrize("k", [0, -1, 1001, "0", "abc", "2.5", 2.5, True, "٣", [5]])
def test_bad_k_is_400(topk, labels, k):
    with pytest.raises(RequestError) as err:
        topk.top_k(cat_logits(), labels, k)
    assert type(err.value) is RequestError and err.value.http_status == 400
    assert "top" in err.value.message and "1000" in err.value.message


@pytest.mark.parametrize("shape", [(1, 999), (2, 1000), (1, 10, 100)])
def test_wrong_shapes_are_corrupt_tensors(topk, labels, shape):
    with pytest.raises(CorruptInputTensor) as err:
        topk.top_k(np.zeros(shape, dtype=np.float32), labels)
    assert err.value.http_status == 400


def test_non_numeric_output_is_refused(topk, labels):
    with pytest.raises(CorruptInputTensor):
        topk.top_k(np.zeros((1, 1000), dtype=bool), labels)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_are_runtime_errors(topk, labels, bad):
    logits = cat_logits()
    logits[3] = bad
    with pytest.raises(InferenceRuntimeError) as err:
        topk.top_k(logits, labels)
    assert err.value.kind == "RuntimeError" and "non-finite" in err.value.message


def test_integer_outputs_are_ranked(topk):
    found = topk.top_k(np.array([[3, 9, 1]], dtype=np.uint8), ["a", "b", "c"], 1)
    assert found[0].label == "b"


def test_matches_takes_a_postprocess_request(topk, labels):
    tensor = Tensor.from_numpy(cat_logits().reshape(1, 1000, 1, 1))
    request = PostprocessRequest(tensor=tensor, top=2)
    found = topk.matches(request, labels)
    assert [m.label for m in found] == ["n02124075 Egyptian cat", "n02123159 tiger cat"]
    with pytest.raises(RequestError):
        topk.matches(PostprocessRequest(tensor=request.tensor, top=0), labels)


def test_parse_synset_variants(topk):
    assert topk.parse_synset(b"n1 a, b\r\nn2 c\r\n\r\n") == ["n1 a, b", "n2 c"]
    assert topk.parse_synset(["n1 a\n", "n2 b\n"]) == ["n1 a", "n2 b"]
    with pytest.raises(ConfigError):
        topk.parse_synset(b"")
    with pytest.raises(ConfigError, match="line 2"):
        topk.parse_synset("n1 a\n\nn2 b\n")


def test_load_labels(topk, tmp_path, imagenet_synset):
    path = tmp_path / "synset.txt"
    path.write_bytes(imagenet_synset)
    assert topk.load_labels(path)[0] == "n01440764 tench, Tinca tinca"
    with pytest.raises(ConfigError, match="cannot read"):
        topk.load_labels(tmp_path / "missing.txt")
