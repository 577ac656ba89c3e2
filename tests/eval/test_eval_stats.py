"""Paired bootstrap of two runs: real differences are called real, noise is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragc.errors import InvalidArgumentError
from ragc.eval.stats import compare_runs, paired_bootstrap


def test_identical_runs_differ_by_nothing() -> None:
    a = np.random.default_rng(1).random(150)
    d = paired_bootstrap(a, a)
    assert (d.diff, d.low, d.high) == (0.0, 0.0, 0.0)
    assert d.ties == 150 and d.wins == d.losses == 0 and not d.significant


def test_a_consistent_gain_is_significant_and_counted() -> None:
    a = np.zeros(100)
    b = np.r_[np.ones(40), np.zeros(60)]  # b right on 40 questions a missed, tied elsewhere
    d = paired_bootstrap(a, b)
    assert d.diff == pytest.approx(40.0) and d.mean_a == 0.0 and d.mean_b == pytest.approx(40.0)
    assert 25 < d.low < 40 < d.high < 55 and d.significant
    assert (d.wins, d.ties, d.losses) == (40, 60, 0)
    assert "+40.0 points" in d.describe() and "of 100" in d.describe()
    cells = d.markdown_cells().split(" | ")
    assert cells[0] == "+40.0" and cells[2] == "40 / 60 / 0" and cells[3] == "**real difference**"


def test_noise_is_not_called_a_difference() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.random(200), rng.random(200)  # two draws of one distribution
    d = paired_bootstrap(a, b, seed=3)
    assert d.low < 0 < d.high and not d.significant
    assert d.verdict == "within noise" and d.markdown_cells().endswith("| within noise")
    # The interval is about +-1.96 standard errors of the mean difference.
    se = 100 * np.std(b - a) / np.sqrt(200)
    assert d.high - d.low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert paired_bootstrap(a, b, seed=3) == d  # seeded: the same interval every time
    assert paired_bootstrap(a, b, confidence=0.5, seed=3).high < d.high


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="one length"):
        paired_bootstrap([0.1, 0.2], [0.3])
    with pytest.raises(InvalidArgumentError, match="at least one"):
        paired_bootstrap([], [])
    with pytest.raises(InvalidArgumentError, match="finite"):
        paired_bootstrap([0.1, float("nan")], [0.3, 0.4])
    with pytest.raises(InvalidArgumentError, match="resamples"):
        paired_bootstrap([0.1], [0.2], resamples=10)
    with pytest.raises(InvalidArgumentError, match="confidence"):
        paired_bootstrap([0.1], [0.2], confidence=1.0)


def _run(directory: Path, f1: dict[str, float]) -> Path:
    directory.mkdir(parents=True)
    rows = [{"qid": q, "em": float(v == 1.0), "f1": v, "contained": v} for q, v in f1.items()]
    (directory / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def test_compare_runs_pairs_the_shared_questions(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", {"q1": 0.0, "q2": 0.5, "q3": 1.0})
    b = _run(tmp_path / "b", {"q2": 1.0, "q3": 1.0, "q4": 0.0})  # q1 and q4 are not shared
    d = compare_runs(a, b, "f1")
    assert d.n == 2 and d.diff == pytest.approx(25.0) and (d.wins, d.ties, d.losses) == (1, 1, 0)
    assert compare_runs(a, b, "em").diff == pytest.approx(50.0)
    with pytest.raises(InvalidArgumentError, match="metric must be"):
        compare_runs(a, b, "bleu")
    with pytest.raises(InvalidArgumentError, match="share no question"):
        compare_runs(a, _run(tmp_path / "c", {"q9": 1.0}))
    with pytest.raises(InvalidArgumentError, match="holds no predictions"):
        compare_runs(a, tmp_path)


def test_compare_command(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", {f"q{i}": 0.0 for i in range(50)})
    b = _run(tmp_path / "b", {f"q{i}": float(i < 30) for i in range(50)})

    def ragc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ragc.cli", "compare", *args], capture_output=True, text=True
        )

    out = ragc(str(a), str(b), "--metric", "f1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("f1: b 60.0 vs 0.0: +60.0 points") and "(real difference)" in out.stdout
    out = ragc(str(a), str(tmp_path / "missing"))
    assert out.returncode == 2 and "holds no predictions" in out.stderr and "Traceback" not in out.stderr
