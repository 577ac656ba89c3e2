"""Paired comparison of two runs on the same questions: is a difference more than noise?

On 200 questions one EM point is two questions, and two compressors that differ by a point
of F1 may well be tied. :func:`paired_bootstrap` resamples the questions (both runs' scores
of a question move together) and gives the mean difference with a percentile confidence
interval, plus win/tie/loss counts; :func:`compare_runs` does it for two run directories of
``ragc eval`` or the benchmarks, on the questions both answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragc.errors import InvalidArgumentError
from ragc.validate import check_int

METRICS = ("em", "f1", "contained")


@dataclass(frozen=True)
class PairedDiff:
    """Mean of ``b - a`` in percentage points, its confidence interval and the counts."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    confidence: float
    wins: int  # questions where b scores higher
    ties: int
    losses: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0

    @property
    def verdict(self) -> str:
        """"real difference" when the interval excludes zero, else "within noise"."""
        return "real difference" if self.significant else "within noise"

    def markdown_cells(self) -> str:
        """``difference | CI | better / tied / worse | verdict`` cells of a report table row
        (a real difference in bold)."""
        verdict = f"**{self.verdict}**" if self.significant else self.verdict
        return (
            f"{self.diff:+.1f} | [{self.low:+.1f}, {self.high:+.1f}] "
            f"| {self.wins} / {self.ties} / {self.losses} | {verdict}"
        )

    def describe(self) -> str:
        pct = f"{100 * self.confidence:g}%"
        return (
            f"{self.mean_b:.1f} vs {self.mean_a:.1f}: {self.diff:+.1f} points "
            f"[{pct} CI {self.low:+.1f}, {self.high:+.1f}]; b better on {self.wins}, "
            f"tied on {self.ties}, worse on {self.losses} of {self.n}"
        )


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDiff:
    """Paired bootstrap of ``mean(b) - mean(a)`` over per-question scores in [0, 1].

    Scores are reported in percentage points. Deterministic for a given ``seed``.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise InvalidArgumentError(
            f"paired scores need two 1-d arrays of one length, got {x.shape} and {y.shape}."
        )
    if len(x) == 0:
        raise InvalidArgumentError("paired_bootstrap needs at least one question.")
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise InvalidArgumentError("paired scores must be finite numbers.")
    check_int("resamples", resamples, minimum=100)
    if not 0 < confidence < 1:
        raise InvalidArgumentError(f"confidence must be in (0, 1), got {confidence!r}.")
    d = y - x
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(d))  # bound memory: resamples x n indices per chunk
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = d[rng.integers(0, len(d), size=(stop - start, len(d)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDiff(
        n=len(d),
        mean_a=100 * float(x.mean()),
        mean_b=100 * float(y.mean()),
        diff=100 * float(d.mean()),
        low=100 * float(low),
        high=100 * float(high),
        confidence=confidence,
        wins=int((d > 0).sum()),
        ties=int((d == 0).sum()),
        losses=int((d < 0).sum()),
    )


def compare_runs(
    run_a: Path, run_b: Path, metric: str = "f1", resamples: int = 10_000, seed: int = 0
) -> PairedDiff:
    """Paired bootstrap of ``metric`` between two run directories, on their shared questions.

    Raises if a directory holds no predictions, the runs share no question, or the metric is
    unknown. Runs with different question sets are compared on the intersection (``n`` says
    how many).
    """
    from ragc.eval.runner import PREDICTIONS_FILE, read_predictions

    if metric not in METRICS:
        raise InvalidArgumentError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}.")
    rows = []
    for run in (run_a, run_b):
        got = read_predictions(Path(run) / PREDICTIONS_FILE, ("qid", metric))
        if not got:
            raise InvalidArgumentError(
                f"{run} holds no predictions ({PREDICTIONS_FILE}); is it a run directory?"
            )
        rows.append(got)
    shared = sorted(set(rows[0]) & set(rows[1]))
    if not shared:
        raise InvalidArgumentError(
            f"{run_a} and {run_b} share no question; compare runs of the same questions."
        )
    a = [float(rows[0][q][metric]) for q in shared]
    b = [float(rows[1][q][metric]) for q in shared]
    return paired_bootstrap(a, b, resamples=resamples, seed=seed)
