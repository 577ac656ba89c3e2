"""One contract, every registered compressor (the shared invariants of compressors/base.py).

A new method adds its row to KWARGS; the matrix then runs it through every invariant. Soft
methods have the invariants of soft output (budget, decoder id, one segment per passage
where they promise it) instead of the text ones (provenance, identity at full budget).
"""

from __future__ import annotations

import pytest

from ragc import registry
from ragc.artefacts import packaged_dir
from ragc.compressors.base import Compressor, UnboundTokenizerError
from ragc.errors import BudgetError, EmptyQueryError, InvalidArgumentError
from ragc.tokens import TokenCounter
from ragc.types import CompressedContext, Passage, Scored, SoftSegment, TextSegment

PASSAGES = [
    Passage("volcano", "Mount Etna is an active volcano on the east coast of Sicily. It is one of the "
            "tallest active volcanoes in Europe, standing about 3,300 metres high. Eruptions have "
            "been recorded there for more than 2,700 years.", "Mount Etna"),
    Passage("bees", "Honeybees communicate the direction of flowers with a waggle dance. The angle "
            "of the dance relative to vertical matches the angle between the sun and the food. "
            "Karl von Frisch decoded the dance and shared the 1973 Nobel Prize.", "Honeybee"),
    Passage("cjk", "東京は日本の首都です。人口は約1400万人です。 Tokyo 🗼 has many train lines.", "Tokyo"),
    Passage("short", "Tides are caused mainly by the Moon's gravity.", ""),
]
QUERY = "Who decoded the waggle dance of honeybees?"

# Compressor -> constructor kwargs used in the contract (fast, offline settings).
KWARGS: dict[str, dict[str, object]] = {
    "none": {},
    "truncate": {},
    "sentences": {"placement": "cpu"},
    "random": {"seed": 1},
    "perplexity": {"model": "smollm2-135m", "placement": {"device": "cpu", "dtype": "float32"}},
    "perplexity-contrastive": {"model": "smollm2-135m", "placement": {"device": "cpu", "dtype": "float32"}},
    "chain": {"stages": [{"name": "sentences", "placement": "cpu"}, {"name": "random"}]},
    "llmlingua2": {"placement": "cpu"},
    "tiered": {"ranker": {"name": "sentences", "placement": "cpu"}, "fine": {"name": "random"}},
    "xrag": {"placement": {"device": "cpu", "dtype": "float32"}, "cache": "off"},
    "compllm": {"placement": {"device": "cpu", "dtype": "float32"}, "cache": "off"},
}
# Not a method but a replay of what `ragc compress` wrote (its budget was applied then, so a
# query-time budget is checked and ignored): its own tests are in tests/engines/.
REPLAYS = {"precompressed"}
METHODS = [n for n in registry.names("compressor") if n not in REPLAYS]
# Soft methods that promise one soft segment per (non-empty) passage.
ONE_SEGMENT_PER_PASSAGE = {"xrag", "compllm"}


def scored() -> list[Scored]:
    return [Scored(p, 1.0 / (i + 1), i) for i, p in enumerate(PASSAGES)]


def test_every_registered_compressor_has_a_row() -> None:
    assert sorted(KWARGS) == METHODS and set(registry.names("compressor")) >= REPLAYS
    assert (packaged_dir("llmlingua2") / "config.json").is_file(), "the packaged LLMLingua-2 weights"


def test_declarations_read_the_same_from_class_and_instance(smol_counter: TokenCounter) -> None:
    for name in METHODS:
        cls = registry.resolve("compressor", name)
        comp = registry.create("compressor", name, **KWARGS[name])
        for attr in ("output", "needs_query", "uses_budget", "at_full_budget"):
            assert getattr(cls, attr) == getattr(comp, attr), (name, attr)
        assert cls.output in ("text", "soft", "kv") and isinstance(cls.needs_query, bool)
        assert "compress" not in vars(cls), f"{name} overrides Compressor.compress"
        if cls.output == "soft":
            assert cls.at_full_budget == "compress"


@pytest.fixture(params=METHODS)
def compressor(request: pytest.FixtureRequest, smol_counter: TokenCounter) -> Compressor:
    comp = registry.create("compressor", request.param, **KWARGS[request.param])
    comp.bind(smol_counter)
    return comp  # type: ignore[no-any-return]


def check_soft(ctx: CompressedContext, comp: Compressor) -> None:
    assert ctx.kept_tokens == sum(s.tokens for s in ctx.segments)
    for seg in ctx.segments:
        if isinstance(seg, SoftSegment):
            assert seg.decoder_id == comp.counter.model_id
            assert seg.embeddings.ndim == 2 and seg.embeddings.shape[0] == seg.tokens
    if comp.name in ONE_SEGMENT_PER_PASSAGE:
        ids = [pid for seg in ctx.segments for pid in seg.passage_ids]
        assert len(ids) == len(set(ids)), "one soft segment per passage"


def check_provenance(ctx: CompressedContext) -> None:
    by_id = {p.id: p for p in PASSAGES}
    for seg in ctx.segments:
        if isinstance(seg, SoftSegment):
            assert set(seg.passage_ids) <= set(by_id)
            continue
        assert isinstance(seg, TextSegment)
        text = by_id[seg.passage_id].text
        assert seg.spans, "a text segment must point back to its passage"
        for a, b in seg.spans:
            assert 0 <= a < b <= len(text)
        pieces = [text[a:b] for a, b in seg.spans]
        # Extractive output: every kept character comes from the cited spans, in order.
        assert "".join(seg.text.split()) in "".join("".join(pieces).split()) or all(
            p.strip() in seg.text for p in pieces if p.strip()
        )


@pytest.mark.parametrize("rate", [0.2, 0.33, 0.5])
def test_rate_budget_is_respected(compressor: Compressor, smol_counter: TokenCounter, rate: float) -> None:
    ctx = compressor.compress(QUERY, scored(), rate)
    source = sum(smol_counter.count(p.text) for p in PASSAGES)
    assert ctx.source_tokens == source
    if compressor.name == "none":
        assert ctx.kept_tokens == source
        return
    assert ctx.kept_tokens <= int(rate * source)
    assert ctx.kept_tokens == sum(s.tokens for s in ctx.segments)
    if compressor.output == "soft":
        check_soft(ctx, compressor)
        if compressor.name == "compllm":
            assert len(ctx.segments) == len(PASSAGES)  # a rate keeps >= 1 concept per segment
        return
    for seg in ctx.segments:  # per-segment counts are real counts in the decoder tokenizer
        if isinstance(seg, TextSegment):
            assert seg.tokens == smol_counter.count(seg.text)
    assert ctx.kept_tokens >= 0.5 * int(rate * source), "should use most of the budget"
    check_provenance(ctx)


def test_token_budget_is_respected(compressor: Compressor) -> None:
    ctx = compressor.compress(QUERY, scored(), 25)
    if compressor.name != "none":
        assert ctx.kept_tokens <= 25
    check_provenance(ctx)
    if compressor.output == "soft":
        check_soft(ctx, compressor)


def test_full_budget_does_what_the_method_declares(compressor: Compressor) -> None:
    if compressor.at_full_budget == "compress":
        ctx = compressor.compress(QUERY, scored(), 1.0)
        assert ctx.segments and all(isinstance(s, SoftSegment) for s in ctx.segments)
        assert ctx.kept_tokens <= ctx.source_tokens
        check_soft(ctx, compressor)
        if compressor.name == "xrag":  # one token per document
            assert ctx.kept_tokens == len(PASSAGES)
        return
    ctx = compressor.compress(QUERY, scored(), 1.0)
    assert [s.text for s in ctx.segments if isinstance(s, TextSegment)] == [p.text for p in PASSAGES]
    assert ctx.kept_tokens == ctx.source_tokens and ctx.ratio == 1.0
    big = compressor.compress(QUERY, scored(), 10_000)  # budget above the input
    assert big.kept_tokens == big.source_tokens


def test_compress_batch_is_compress_per_query(compressor: Compressor) -> None:
    one = compressor.compress(QUERY, scored(), 0.33)
    batch = compressor.compress_batch([QUERY, QUERY], [scored(), scored()[:2]], 0.33)
    assert len(batch) == 2 and batch[0].kept_tokens == one.kept_tokens
    assert [s.passage_ids for s in batch[0].segments] == [s.passage_ids for s in one.segments]
    assert set(batch[1].passage_ids) <= {"volcano", "bees"}
    with pytest.raises(InvalidArgumentError, match="one passage list per query"):
        compressor.compress_batch([QUERY], [scored(), scored()])


def test_empty_input(compressor: Compressor) -> None:
    ctx = compressor.compress(QUERY, [], 0.5)
    assert ctx.segments == () and ctx.kept_tokens == 0 and ctx.ratio == 1.0


def test_invalid_budgets(compressor: Compressor) -> None:
    for bad in (0.0, 1.5, -3, -0.1, True, "half"):
        with pytest.raises(BudgetError):
            compressor.compress(QUERY, scored(), bad)  # type: ignore[arg-type]


def test_query_requirement(compressor: Compressor) -> None:
    if compressor.needs_query:
        with pytest.raises(EmptyQueryError):
            compressor.compress("  ", scored(), 0.5)
    else:
        assert compressor.compress(None, scored(), 0.5).source_tokens > 0


def test_unbound_compressor_says_what_to_do() -> None:
    comp = registry.create("compressor", "truncate")
    with pytest.raises(UnboundTokenizerError, match="bind"):
        comp.compress(QUERY, scored(), 0.5)


def test_sentences_keeps_the_relevant_sentence(smol_counter: TokenCounter) -> None:
    comp = registry.create("compressor", "sentences", placement="cpu")
    comp.bind(smol_counter)
    ctx = comp.compress(QUERY, scored(), 0.2)
    kept = " ".join(s.text for s in ctx.segments if isinstance(s, TextSegment))
    assert "waggle dance" in kept  # the on-topic passage survives...
    assert "Etna" not in kept and "Tokyo" not in kept  # ...the off-topic ones do not
    assert ctx.passage_ids == ("bees",)


def test_truncate_keeps_heads(smol_counter: TokenCounter) -> None:
    comp = registry.create("compressor", "truncate")
    comp.bind(smol_counter)
    ctx = comp.compress(QUERY, scored(), 0.5)
    for seg in ctx.segments:
        assert isinstance(seg, TextSegment)
        full = next(p.text for p in PASSAGES if p.id == seg.passage_id)
        assert full.startswith(seg.text) and seg.spans == ((0, len(seg.text)),)


@pytest.mark.parametrize("rate", [0.2, 0.33, 0.5, 0.8])
@pytest.mark.parametrize("allocation", ["global", "per_passage", "rank"])
def test_word_compressors_hit_the_budget_within_2_percent(
    compressor: Compressor, smol_counter: TokenCounter, rate: float, allocation: str
) -> None:
    from ragc.compressors.token_scoring import TokenScoringCompressor

    if not isinstance(compressor, TokenScoringCompressor):
        pytest.skip("budget precision is a promise of word-level compressors")
    name = compressor.name
    compressor = registry.create("compressor", name, **KWARGS[name], allocation=allocation)
    compressor.bind(smol_counter)
    ctx = compressor.compress(QUERY, scored(), rate)
    target = int(rate * ctx.source_tokens)
    assert 0.98 * target - 1 <= ctx.kept_tokens <= target
    check_provenance(ctx)
    for seg in ctx.segments:  # every run is verbatim passage text
        assert isinstance(seg, TextSegment)
        src = next(p.text for p in PASSAGES if p.id == seg.passage_id)
        assert seg.text == " ".join(src[a:b] for a, b in seg.spans)


def test_force_keep_words_survive(smol_counter: TokenCounter) -> None:
    comp = registry.create("compressor", "random", seed=3, force_keep=("?", "Frisch"))
    comp.bind(smol_counter)
    texts = [s.text for s in comp.compress(QUERY, scored(), 0.3).segments if isinstance(s, TextSegment)]
    assert any("Frisch" in t for t in texts)


def test_chain_composes_provenance(smol_counter: TokenCounter) -> None:
    from ragc.compressors.chain import compose_spans

    assert compose_spans(((10, 15), (30, 34)), ((2, 8),)) == ((12, 15), (30, 32))
    stages = [{"name": "sentences", "placement": "cpu"}, {"name": "random"}]
    comp = registry.create("compressor", "chain", stages=stages, budget=0.25)
    comp.bind(smol_counter)
    assert comp.needs_query
    ctx = comp.compress(QUERY, scored())
    assert ctx.kept_tokens <= int(0.25 * ctx.source_tokens)
    assert set(ctx.passage_ids) <= {"bees", "volcano", "cjk", "short"}
    by_id = {p.id: p.text for p in PASSAGES}
    for seg in ctx.segments:
        assert isinstance(seg, TextSegment)
        assert seg.text.split() == " ".join(by_id[seg.passage_id][a:b] for a, b in seg.spans).split()
