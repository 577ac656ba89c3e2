"""Report formatting: fixed-width table, markdown report and PNG plot."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from ragc.config import PipelineConfig
from ragc.eval.report import format_table, markdown_report, plot
from ragc.eval.runner import EvalSummary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def summaries() -> list[EvalSummary]:
    closed = EvalSummary("closed-book", 200, 4.0, 9.5, 6.0, {}, 60.0, 0.0, 0.0, 1.0, 0.4, 0.4, 1.9, 900.0)
    hybrid = EvalSummary(
        "hybrid+truncate", 200, 35.5, 47.25, 52.0, {1: 61.0, 5: 83.5, 20: 93.0},
        310.0, 850.0, 280.0, 0.33, 2.1, 1.6, 3.8, 1200.0, truncated=1, answer_kept=71.5,
    )
    empty = EvalSummary("empty", 0, math.nan, math.nan, math.nan)
    return [closed, hybrid, empty]


def test_format_table(summaries: list[EvalSummary]) -> None:
    lines = format_table(summaries).splitlines()
    assert len(lines) == 2 + len(summaries)
    assert len({len(line.rstrip()) for line in lines[:3]}) == 1  # fixed width
    header = lines[0].split()
    assert header[:5] == ["run", "n", "R@1", "R@5", "R@20"]
    hybrid = lines[3].split()
    assert hybrid[:9] == ["hybrid+truncate", "200", "61.0", "83.5", "93.0", "35.5", "47.2", "52.0", "71.5"]
    closed = lines[2].split()
    assert closed[2:5] == ["-", "-", "-"]  # no recall for closed-book
    assert closed[8] == "-"  # and no context to keep an answer in
    assert lines[4].split()[5] == "-"  # NaN shows as a dash


def test_markdown_report(summaries: list[EvalSummary]) -> None:
    cmd = "python benchmarks/baseline.py --n 200"
    md = markdown_report(summaries, "Baseline", cmd, ["first note", "second note"], image="b.png")
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(summaries)  # header, alignment, one row per summary
    assert md.startswith("# Baseline\n")
    assert cmd in md and "CPUs" in md and "torch" in md
    assert "- first note" in md and "![Baseline](b.png)" in md
    assert "| hybrid+truncate | 200 | 61.0 | 83.5 | 93.0 | 35.5 | 47.2 |" in md


def test_plot_writes_png(tmp_path: Path, summaries: list[EvalSummary]) -> None:
    out = plot(summaries, tmp_path / "sub" / "plot.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert out.stat().st_size > 5000


def test_baseline_specs_are_valid_configs() -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "baseline.py"
    spec = importlib.util.spec_from_file_location("baseline_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    specs = module.baseline_specs(200, 0, "qwen2.5-0.5b")
    names = [s.name for s in specs]
    assert names == ["closed-book", "dense", "bm25", "hybrid", "hybrid+truncate", "hybrid+sentences"]
    for s in specs:
        cfg = PipelineConfig.from_dict(s.pipeline)  # names resolve in the registry
        assert cfg.k == 5 and cfg.decoder.params == {"model": "qwen2.5-0.5b"}
        assert (s.n_questions, s.seed, s.recall_ks, s.dataset) == (200, 0, (1, 5, 20), "squad-dev")
    assert specs[0].pipeline["retriever"] is None
    assert specs[4].pipeline["compressor"] == {"name": "truncate", "budget": 0.33}
    assert module.run_tag("qwen2.5-0.5b", 200, 0) == "baseline"
    assert module.run_tag("smollm2-135m", 10, 0) == "baseline-smollm2-135m-n10-seed0"
