"""The pure parts of mlcloud.experiments: the split value, arm choice, Beta posteriors and quantiles."""

from __future__ import annotations

import collections
import random

import pytest

from mlcloud.errors import RequestError
from mlcloud.experiments import Policy, Posterior, Split, beta_quantile, check_reward, choose, report, splits_of

stats = pytest.importorskip("scipy.stats")  # the reference for the quantiles (the sklearn extra brings it)


@pytest.mark.parametrize(("p", "a", "b"), [(0.025, 1, 1), (0.975, 1, 1), (0.5, 2, 5), (0.025, 161, 41),
                                           (0.975, 161, 41), (0.001, 0.5, 0.5), (0.999, 800.5, 200.5),
                                           (0.3, 1, 900)])
def test_beta_quantiles_match_scipy(p: float, a: float, b: float) -> None:
    assert beta_quantile(p, a, b) == pytest.approx(stats.beta.ppf(p, a, b), abs=1e-9)


def test_a_posterior_takes_fractional_rewards_and_its_interval_narrows() -> None:
    posterior = Posterior()
    assert (posterior.alpha, posterior.beta, posterior.mean) == (1, 1, 0.5)
    assert posterior.interval() == pytest.approx((0.025, 0.975))
    for reward in (1.0, 0.25, 0.0, 1.0):
        posterior = posterior.rewarded(reward)
    assert (posterior.alpha, posterior.beta, posterior.rewards) == (3.25, 2.75, 4)
    wide = posterior.interval()
    for _ in range(200):
        posterior = posterior.rewarded(0.8)
    low, high = posterior.interval()
    assert low < posterior.mean < high and high - low < (wide[1] - wide[0]) / 4
    assert Posterior.decode(posterior.encode()) == posterior


def test_a_split_is_normalised_and_travels_as_a_link_value() -> None:
    split = Split.make("iris", {"1.0.0": 9, "2.0.0": 1}, "fixed")
    assert split.weights == {"1.0.0": 0.9, "2.0.0": 0.1}
    assert split.arm_route("2.0.0") == "iris@2.0.0"
    values = {"iris": "iris/2.0.0", "iris@1.0.0": "iris/1.0.0", "split.iris": split.to_value(), "split.bad": "{"}
    assert splits_of(values) == {"iris": split}
    assert Split.make("iris", ["1.0.0", "2.0.0"], "thompson").weights == {"1.0.0": 0.5, "2.0.0": 0.5}


@pytest.mark.parametrize(("arms", "policy", "says"), [
    ({"1.0.0": 1}, "fixed", "two versions"),
    ({"1.0.0": 1, "2.0.0": -1}, "fixed", "must be a number >= 0"),
    ({"1.0.0": 0, "2.0.0": 0}, "fixed", "above 0"),
    ({"1.0.0": 1, "2.0.0+build": 1}, "fixed", "not a version"),
    ({"1.0.0": 1, "2.0.0": 1}, "greedy", "unknown policy"),
])
def test_a_bad_split_is_refused_with_the_reason(arms: dict[str, float], policy: str, says: str) -> None:
    with pytest.raises(RequestError, match=says):
        Split.make("iris", arms, policy)


@pytest.mark.parametrize("value", [-0.1, 1.01, "1", None, True, float("nan")])
def test_a_reward_is_a_number_from_0_to_1(value: object) -> None:
    with pytest.raises(RequestError, match="reward must be"):
        check_reward(value)


def test_choices_follow_the_weights_and_a_key_keeps_its_arm() -> None:
    split = Split.make("m", {"a": 0.7, "b": 0.3}, Policy.FIXED)
    rng = random.Random(1)
    counts = collections.Counter(choose(split, {}, rng=rng) for _ in range(10_000))
    assert abs(counts["b"] - 3000) < 5 * (10_000 * 0.21) ** 0.5
    for key in ("k1", "k2", "k3"):
        assert len({choose(split, {}, key) for _ in range(20)}) == 1
    thompson = Split.make("m", ["a", "b"], Policy.THOMPSON)
    posteriors = {"a": Posterior(20, 80, 100), "b": Posterior(80, 20, 100)}
    assert collections.Counter(choose(thompson, posteriors, rng=rng) for _ in range(1000))["b"] > 990
    assert len({choose(thompson, posteriors, "same key") for _ in range(20)}) == 1


def test_the_report_gives_each_arm_its_share_and_interval() -> None:
    split = Split.make("m", {"1": 0.5, "2": 0.5}, Policy.THOMPSON)
    shown = report(split, {"2": Posterior(8, 2, 10)}, {"1": 30, "2": 90})
    first, second = shown["arms"]
    assert (shown["policy"], first["share"], second["share"]) == ("thompson", 0.25, 0.75)
    assert (first["rewards"], first["mean"], second["mean"]) == (0, 0.5, 0.75)
    assert second["low"] == pytest.approx(stats.beta.ppf(0.025, 9, 3), abs=1e-9)
    assert report(split, {}, {})["arms"][0]["share"] is None
