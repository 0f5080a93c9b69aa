"""Paired statistics for a candidate model against a baseline, on the same tasks and epochs.

Pure functions over per-task outcomes; no I/O, no randomness but an explicit seed. Why these:
- a task's two outcomes are paired (same task, same start state), so the gate looks at per-task
  differences, never at two independent means: the discordant pairs carry all the information;
- below a few hundred tasks a normal approximation misstates both the p-value and the interval, so
  McNemar is exact (binomial on the discordant pairs) and rates get Wilson intervals;
- with epochs > 1 a task's pass rate is a fraction, and the test is a paired bootstrap clustered by
  project (tasks of one project are not independent), on the per-task difference of pass rates.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

Verdict = Literal["pass", "fail", "inconclusive"]
WILSON_BELOW = 300
"""Task counts under which rates are reported with Wilson intervals (arXiv 2503.01747)."""


def binom_cdf(k: int, n: int, p: float = 0.5) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed exactly in log space."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0 or p >= 1.0:
        return 1.0 if p <= 0.0 else 0.0
    total = 0.0
    for i in range(k + 1):
        log_term = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        log_term += i * math.log(p) + (n - i) * math.log1p(-p)
        total += math.exp(log_term)
    return min(1.0, total)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value. `b`: baseline passed, candidate failed; `c`: the reverse."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf(min(b, c), n))


def mcnemar_one_sided(b: int, c: int) -> float:
    """P(at least `b` candidate-only losses of `b + c` discordant pairs | no difference)."""
    n = b + c
    if n == 0:
        return 1.0
    return 1.0 - binom_cdf(b - 1, n)


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (`successes` may be fractional: mean over epochs)."""
    if n <= 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples with `c` passes (Chen et al. 2021): P(any of k passes)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: P(all of k samples pass), estimated without replacement from `n` samples."""
    if c < k:
        return 0.0
    return math.comb(c, k) / math.comb(n, k)


def minimum_detectable_effect(tasks: int, alpha: float, power: float, discordance: float = 0.3) -> float:
    """The smallest drop in pass rate a one-sided paired test of `tasks` tasks detects with `power`.

    Paired-proportion approximation (Connor 1987): with a share `discordance` of tasks whose two
    outcomes differ, the SD of the per-task difference is about sqrt(discordance), so the MDE is
    (z_alpha + z_power) * sqrt(discordance / tasks). It is an estimate to state, not a test.
    """
    if tasks <= 0:
        return 1.0
    z = NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(power)
    return min(1.0, z * math.sqrt(max(discordance, 1e-9) / tasks))


@dataclass(frozen=True)
class TaskOutcome:
    """One task's epochs on both sides: True where checks passed."""

    task: str
    project: str
    baseline: tuple[bool, ...]
    candidate: tuple[bool, ...]

    @property
    def baseline_rate(self) -> float:
        return sum(self.baseline) / len(self.baseline) if self.baseline else 0.0

    @property
    def candidate_rate(self) -> float:
        return sum(self.candidate) / len(self.candidate) if self.candidate else 0.0

    @property
    def difference(self) -> float:
        return self.candidate_rate - self.baseline_rate


def paired_bootstrap(
    outcomes: Sequence[TaskOutcome], *, resamples: int = 4000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean per-task difference (candidate - baseline) and its percentile interval, resampling whole
    projects (clusters) with replacement and then tasks within them."""
    by_project: dict[str, list[float]] = {}
    for o in outcomes:
        by_project.setdefault(o.project, []).append(o.difference)
    clusters = list(by_project.values())
    diffs = [d for c in clusters for d in c]
    if not diffs:
        return (0.0, 0.0, 0.0)
    mean = sum(diffs) / len(diffs)
    rng = random.Random(seed)
    means: list[float] = []
    for _ in range(resamples):
        picked: list[float] = []
        for cluster in rng.choices(clusters, k=len(clusters)):
            picked.extend(rng.choices(cluster, k=len(cluster)))
        means.append(sum(picked) / len(picked))
    means.sort()
    tail = (1 - confidence) / 2
    low = means[math.floor(tail * (resamples - 1))]
    high = means[math.ceil((1 - tail) * (resamples - 1))]
    return (mean, low, high)


@dataclass(frozen=True)
class GateConfig:
    margin: float = 0.05
    alpha: float = 0.05
    power: float = 0.8
    min_tasks: int = 8
    seed: int = 0


@dataclass(frozen=True)
class Analysis:
    verdict: Verdict
    reason: str
    tasks: int
    epochs: int
    """The candidate's epochs per task (the fewest any task got)."""
    test: str
    baseline_rate: float
    candidate_rate: float
    baseline_interval: tuple[float, float]
    candidate_interval: tuple[float, float]
    difference: float
    difference_interval: tuple[float, float]
    p_value: float
    """Two-sided exact McNemar on the first epoch of each side."""
    discordant: tuple[int, int]
    """(baseline only passed, candidate only passed) over the first-epoch pairs."""
    mde: float
    margin: float
    pass_at_k: dict[str, float] = field(default_factory=dict)
    pass_hat_k: dict[str, float] = field(default_factory=dict)
    regressions: tuple[str, ...] = ()
    improvements: tuple[str, ...] = ()


def _rates_at_k(outcomes: Sequence[TaskOutcome], epochs: int, side: str) -> tuple[dict[str, float], ...]:
    at: dict[str, float] = {}
    hat: dict[str, float] = {}
    for k in range(1, epochs + 1):
        runs = [o.baseline if side == "baseline" else o.candidate for o in outcomes]
        at[str(k)] = sum(pass_at_k(len(r), sum(r), k) for r in runs) / len(runs)
        hat[str(k)] = sum(pass_hat_k(len(r), sum(r), k) for r in runs) / len(runs)
    return at, hat


def analyse(outcomes: Sequence[TaskOutcome], gate: GateConfig) -> Analysis:
    """The gate: `fail` when the candidate is worse than the baseline by more than the margin with
    the configured confidence; `pass` when that is ruled out; `inconclusive` when the tasks are too
    few for either (fewer than `min_tasks`, or the interval straddles the margin)."""
    n = len(outcomes)
    epochs = min((len(o.candidate) for o in outcomes), default=0)
    # One epoch on both sides: binary pairs, exactly. More on either side (a candidate's K epochs
    # against one recorded run, say): each task's rate is a fraction, so the bootstrap.
    binary = all(len(o.baseline) <= 1 and len(o.candidate) <= 1 for o in outcomes)
    confidence = 1 - 2 * gate.alpha  # a one-sided test at alpha reads a two-sided 1-2a interval
    base = sum(o.baseline_rate for o in outcomes)
    cand = sum(o.candidate_rate for o in outcomes)
    b = sum(1 for o in outcomes if o.baseline[:1] == (True,) and o.candidate[:1] == (False,))
    c = sum(1 for o in outcomes if o.baseline[:1] == (False,) and o.candidate[:1] == (True,))
    regressions = tuple(o.task for o in sorted(outcomes, key=lambda o: o.difference) if o.difference < 0)
    improvements = tuple(o.task for o in outcomes if o.difference > 0)
    mean, low, high = paired_bootstrap(outcomes, seed=gate.seed, confidence=confidence)
    if binary and n:
        # Binary pairs: an exact interval on the difference from the discordant pairs (the
        # conditional binomial), rather than the bootstrap, which is degenerate on few discordants.
        disc = b + c
        if disc:
            lo_share, hi_share = _clopper_pearson(c, disc, confidence)
            low, high = (2 * lo_share - 1) * disc / n, (2 * hi_share - 1) * disc / n
        else:
            low = high = 0.0
        test = "exact McNemar on the discordant pairs"
    else:
        test = "paired bootstrap clustered by project"
    p_value = mcnemar_exact(b, c)
    mde = minimum_detectable_effect(n, gate.alpha, gate.power)
    at, hat = _rates_at_k(outcomes, epochs, "candidate") if n else ({}, {})
    if n < gate.min_tasks:
        verdict: Verdict = "inconclusive"
        reason = f"{n} task(s) is fewer than the {gate.min_tasks} the gate needs to decide"
    elif high < -gate.margin:
        verdict, reason = (
            "fail",
            (
                f"the candidate is worse by more than the margin {gate.margin:.2f}: "
                f"the difference's upper bound is {high:+.3f}"
            ),
        )
    elif low >= -gate.margin:
        verdict, reason = (
            "pass",
            (f"a drop beyond the margin {gate.margin:.2f} is ruled out: the lower bound is {low:+.3f}"),
        )
    else:
        verdict, reason = (
            "inconclusive",
            (
                f"the interval [{low:+.3f}, {high:+.3f}] straddles the margin -{gate.margin:.2f}; "
                f"with {n} tasks the minimum detectable effect is {mde:.2f}"
            ),
        )
    return Analysis(
        verdict=verdict,
        reason=reason,
        tasks=n,
        epochs=epochs,
        test=test,
        baseline_rate=base / n if n else 0.0,
        candidate_rate=cand / n if n else 0.0,
        baseline_interval=wilson(base, n, 1 - gate.alpha * 2 if n < WILSON_BELOW else 0.95),
        candidate_interval=wilson(cand, n, 1 - gate.alpha * 2 if n < WILSON_BELOW else 0.95),
        difference=mean,
        difference_interval=(low, high),
        p_value=p_value,
        discordant=(b, c),
        mde=mde,
        margin=gate.margin,
        pass_at_k=at,
        pass_hat_k=hat,
        regressions=regressions,
        improvements=improvements,
    )


def _clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion, by bisection on the CDF."""
    tail = (1 - confidence) / 2

    def solve(target: float, count: int) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if binom_cdf(count, n, mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(1 - tail, k - 1)
    upper = 1.0 if k == n else solve(tail, k)
    return (lower, upper)


def describe(outcomes: Mapping[str, TaskOutcome]) -> list[TaskOutcome]:
    """Outcomes ordered for a report: regressions first (worst first), then the rest by task."""
    return sorted(outcomes.values(), key=lambda o: (o.difference >= 0, o.difference, o.task))
