"""Known-answer tests for the gate's statistics, checked against scipy (a test-only dependency)."""

from __future__ import annotations

import itertools
import random

import pytest
from scipy import stats as sp

from corral.regress.stats import (
    GateConfig,
    TaskOutcome,
    _clopper_pearson,
    analyse,
    mcnemar_exact,
    mcnemar_one_sided,
    minimum_detectable_effect,
    pass_at_k,
    pass_hat_k,
    wilson,
)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 0), (6, 0), (5, 2), (10, 3), (3, 10), (40, 25), (7, 7)])
def test_mcnemar_exact_matches_the_binomial_test(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else sp.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)
    if b + c:
        one_sided = sp.binomtest(b, b + c, 0.5, alternative="greater").pvalue
        assert mcnemar_one_sided(b, c) == pytest.approx(one_sided, rel=1e-9)


@pytest.mark.parametrize(("k", "n"), [(0, 8), (3, 8), (8, 8), (17, 40), (150, 299)])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_wilson_and_exact_intervals_match_scipy(k: int, n: int, confidence: float) -> None:
    result = sp.binomtest(k, n)
    w = result.proportion_ci(confidence, method="wilson")
    assert wilson(k, n, confidence) == pytest.approx((w.low, w.high), abs=1e-9)
    cp = result.proportion_ci(confidence, method="exact")
    assert _clopper_pearson(k, n, confidence) == pytest.approx((cp.low, cp.high), abs=1e-9)


def test_pass_at_k_and_pass_hat_k_match_enumeration() -> None:
    for n, c, k in [(3, 0, 1), (3, 1, 2), (3, 2, 2), (5, 3, 3), (6, 6, 4)]:
        samples = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
        assert pass_hat_k(n, c, k) == pytest.approx(sum(all(s) for s in subsets) / len(subsets))


def test_minimum_detectable_effect_shrinks_with_tasks_as_one_over_root_n() -> None:
    small, large = minimum_detectable_effect(25, 0.05, 0.8), minimum_detectable_effect(100, 0.05, 0.8)
    assert small == pytest.approx(2 * large)
    z = sp.norm.ppf(0.95) + sp.norm.ppf(0.8)
    assert large == pytest.approx(z * (0.3 / 100) ** 0.5)


def _window(base: list[bool], cand: list[bool], epochs: int = 3) -> list[TaskOutcome]:
    return [
        TaskOutcome(f"task-{i}", "shop", (b,) * epochs, (c,) * epochs)
        for i, (b, c) in enumerate(zip(base, cand, strict=True))
    ]


# Eight recorded tasks: four the humans approved (checks passed) and four they rejected.
BASELINE = [True] * 4 + [False] * 4


def test_better_candidate_passes() -> None:
    result = analyse(_window(BASELINE, [True] * 8), GateConfig())
    assert result.verdict == "pass"
    assert result.improvements == tuple(f"task-{i}" for i in range(4, 8))
    assert result.regressions == ()


def test_worse_candidate_fails() -> None:
    result = analyse(_window(BASELINE, [False] * 8), GateConfig())
    assert result.verdict == "fail"
    assert result.difference == pytest.approx(-0.5)
    assert result.difference_interval[1] < -0.05


def test_mixed_candidate_lists_its_regressions_first() -> None:
    mixed = [False, True, False, True, True, True, True, True]  # breaks tasks 0 and 2, fixes 4-7
    result = analyse(_window(BASELINE, mixed), GateConfig())
    assert result.regressions == ("task-0", "task-2")
    assert set(result.improvements) == {f"task-{i}" for i in range(4, 8)}


def test_noisy_candidate_is_no_false_fail_against_an_equal_baseline() -> None:
    """Both sides fix each task in about half their epochs (a fixed seed per repeat)."""
    verdicts = []
    for seed in range(20):
        rng = random.Random(seed)
        window = [
            TaskOutcome(
                f"task-{i}",
                "shop",
                tuple(rng.random() < 0.5 for _ in range(3)),
                tuple(rng.random() < 0.5 for _ in range(3)),
            )
            for i in range(8)
        ]
        verdicts.append(analyse(window, GateConfig(seed=seed)).verdict)
    assert verdicts.count("fail") <= 1, verdicts


def test_too_few_tasks_are_inconclusive_not_a_pass() -> None:
    result = analyse(_window([True] * 3, [True] * 3), GateConfig())
    assert result.verdict == "inconclusive"
    assert "fewer than" in result.reason


def test_single_epoch_uses_the_exact_test_and_is_honest_about_few_discordant_pairs() -> None:
    # Two improvements out of eight single-epoch pairs cannot rule out a 5-point drop.
    result = analyse(_window([True] * 6 + [False] * 2, [True] * 8, epochs=1), GateConfig())
    assert result.test.startswith("exact McNemar")
    assert result.discordant == (0, 2)
    assert result.verdict == "inconclusive"
    many = analyse(_window([True] * 20 + [False] * 10, [True] * 30, epochs=1), GateConfig())
    assert many.verdict == "pass"
    worse = analyse(_window([True] * 6 + [False] * 2, [False] * 8, epochs=1), GateConfig())
    assert worse.verdict == "fail"
    assert worse.p_value == pytest.approx(sp.binomtest(6, 6, 0.5).pvalue)


def test_a_recorded_run_against_k_candidate_epochs_uses_every_epoch() -> None:
    # The default suite: one recorded (approved, passing) run per task, three candidate epochs.
    window = [TaskOutcome(f"task-{i}", "shop", (True,), (True, False, False)) for i in range(10)]
    result = analyse(window, GateConfig())
    assert result.test.startswith("paired bootstrap") and result.epochs == 3
    assert result.candidate_rate == pytest.approx(1 / 3)
    assert result.verdict == "fail"
    assert result.pass_at_k["3"] == pytest.approx(1.0) and result.pass_hat_k["3"] == 0.0
