"""Types, registry and config: the small contracts everything else builds on."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragc import registry
from ragc.compressors.allocation import allocate
from ragc.config import PipelineConfig
from ragc.errors import BudgetError, ConfigError, InvalidArgumentError, UnknownComponentError
from ragc.types import Budget, CompressedContext


def test_budget_parse_and_targets() -> None:
    assert Budget.parse(0.33) == Budget(rate=0.33)
    assert Budget.parse(120) == Budget(tokens=120)
    assert Budget(rate=0.5).target(101) == 50
    assert Budget(tokens=500).target(200) == 200
    assert Budget(rate=1.0).target(7) == 7
    for bad in (0.0, 1.01, -1, True, None, "0.5"):
        with pytest.raises(BudgetError):
            Budget.parse(bad)  # type: ignore[arg-type]
    with pytest.raises(BudgetError):
        Budget(rate=0.5, tokens=3)


def test_context_ratio() -> None:
    ctx = CompressedContext((), 300, 100)
    assert ctx.rate == pytest.approx(1 / 3) and ctx.ratio == pytest.approx(3.0)
    assert CompressedContext.empty().ratio == 1.0


def test_allocate_is_proportional_and_exact() -> None:
    assert allocate(10, [10, 10]) == [5, 5]
    assert sum(allocate(7, [3, 5, 9])) == 7
    assert allocate(100, [3, 5]) == [3, 5]
    assert allocate(0, [3, 5]) == [0, 0]
    shares = allocate(11, [1, 100])
    assert shares[0] <= 1 and sum(shares) == 11


def test_allocate_by_rank_favours_the_best_ranked_items_and_stays_exact() -> None:
    import random

    assert allocate(283, [170] * 5, 1.0) == allocate(283, [170] * 5)  # decay 1 = proportional
    assert allocate(283, [170] * 5, 0.5) == [147, 73, 36, 18, 9]  # weights 1, 1/2, 1/4, ...
    # The first item's share (203) would exceed its 170 tokens: it stays whole and the other
    # 113 are split again over the rest by their weights 0.3, 0.09, 0.027, 0.0081.
    assert allocate(283, [170] * 5, 0.3) == [170, 81, 23, 7, 2]
    assert allocate(10, [3, 3, 3, 3], 0.0) == [3, 3, 3, 1]  # decay 0: strictly in rank order
    assert allocate(100, [0, 50, 60], 0.5) == [0, 50, 50]  # an empty item takes nothing
    rng = random.Random(0)
    for _ in range(3000):
        lengths = [rng.randint(0, 300) for _ in range(rng.randint(1, 7))]
        target = rng.randint(-5, sum(lengths) + 5)
        decay = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0])
        shares = allocate(target, lengths, decay)
        assert all(0 <= a <= n for a, n in zip(shares, lengths))
        assert sum(shares) == max(0, min(target, sum(lengths)))


def test_allocate_min_share_drops_slivers_and_gives_their_tokens_to_the_others() -> None:
    import random

    # Without it decay 0.3 keeps 7 and 2 tokens of the last two items; with 8 both go, the
    # worst-ranked first, and their 9 tokens are split again over the better-ranked ones.
    assert allocate(283, [170] * 5, 0.3, min_share=8) == [170, 87, 26, 0, 0]
    assert allocate(283, [170] * 5, 0.3, min_share=2) == [170, 81, 23, 7, 2]
    assert allocate(20, [4, 100, 100], 1.0, min_share=8) == [0, 10, 10]  # a sliver of a short item
    assert allocate(24, [4, 100, 100], 0.0, min_share=8) == [4, 20, 0]  # a whole short item stays
    assert allocate(5, [100, 100], 1.0, min_share=8) == [5, 0]  # the last item left keeps all
    assert allocate(103, [100, 50], 0.0, min_share=8) == [100, 0]  # nowhere to move 3: lost
    rng = random.Random(1)
    for _ in range(2000):
        lengths = [rng.randint(0, 300) for _ in range(rng.randint(1, 7))]
        target = rng.randint(0, sum(lengths) + 5)
        decay, m = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0]), rng.randint(2, 40)
        shares = allocate(target, lengths, decay, min_share=m)
        assert all(0 <= a <= n for a, n in zip(shares, lengths))
        assert sum(shares) <= min(target, sum(lengths))
        kept = [i for i, a in enumerate(shares) if a]
        assert len(kept) <= 1 or all(shares[i] >= min(m, lengths[i]) for i in kept)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UnknownComponentError) as err:
        registry.create("compressor", "llmlingua9")
    assert "truncate" in str(err.value) and "sentences" in str(err.value)
    assert isinstance(err.value, KeyError)
    with pytest.raises(UnknownComponentError, match="retriever"):
        registry.names("retreiver")
    assert {"dense", "bm25", "hybrid"} <= set(registry.names("retriever"))


def test_config_maps_one_to_one_to_constructors(tmp_path: Path) -> None:
    cfg = PipelineConfig.from_dict(
        {"retriever": "bm25", "compressor": {"name": "truncate", "budget": 0.33}, "k": 3}
    )
    comp = cfg.compressor.build()
    assert type(comp).__name__ == "TruncateCompressor" and comp.budget == 0.33
    assert cfg.to_dict()["retriever"] == {"name": "bm25"}
    path = tmp_path / "p.yaml"
    path.write_text("retriever: null\ncompressor: {name: none}\ndecoder: {name: hf, model: smollm2-135m}\n")
    loaded = PipelineConfig.load(path)
    assert loaded.retriever is None and loaded.decoder.params == {"model": "smollm2-135m"}
    assert PipelineConfig.from_dict(loaded.to_dict()) == loaded


def test_config_errors_say_what_is_valid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Valid keys"):
        PipelineConfig.from_dict({"retriver": "bm25"})
    with pytest.raises(UnknownComponentError, match="bm25"):
        PipelineConfig.from_dict({"retriever": "elastic"})
    with pytest.raises(ConfigError, match="Valid parameters: budget"):
        PipelineConfig.from_dict({"compressor": {"name": "truncate", "rate": 0.3}}).compressor.build()
    with pytest.raises(InvalidArgumentError):
        PipelineConfig.from_dict({"k": 0})
    with pytest.raises(ConfigError, match="does not exist"):
        PipelineConfig.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe: [")
    with pytest.raises(ConfigError):
        PipelineConfig.load(tmp_path / "bad.yaml")
