"""ragc inside a LlamaIndex query engine vs the native ``Pipeline``, and vs ``LongLLMLinguaPostprocessor``.

Usage (from the repository root, in the benchmark venv that also has llmlingua and
LlamaIndex's LongLLMLingua postprocessor; nothing is downloaded)::

    bash benchmarks/setup_llmlingua_env.sh     # once
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv-llmlingua/bin/python benchmarks/llamaindex.py --n 200

The same ``n`` open-domain SQuAD v1.1 dev questions (seed 0) are answered over all 2,067 dev
paragraphs by ``hybrid`` retrieval (MiniLM dense + BM25, top 5) and ``qwen2.5-0.5b`` (greedy,
32 new tokens), one question at a time, through:

- ``native``: ``ragc.Pipeline`` with compressor ``none``, ``sentences`` and ``tiered`` at rate 0.33;
- ``llamaindex``: ``RetrieverQueryEngine(RagcRetriever, RagcSynthesizer(RagcLLM))`` without a
  postprocessor, with ``RagcNodePostprocessor`` (``sentences``, ``tiered``, ``llmlingua2`` at
  0.33) and with ``LongLLMLinguaPostprocessor`` in LLMLingua-2 mode at rate 0.33 over the same
  MiniLM token-classifier weights as ``llmlingua2`` (``benchmarks/longllmlingua_adapter.py``
  says how it is built around its constructor).

Each row reports the decoder's prompt and context tokens, EM/F1, postprocessing ms, end-to-end
seconds, and whether node ids and metadata survive postprocessing; a paired bootstrap compares
each LlamaIndex row with the native run of the same configuration. Answers are kept per row
under ``--work`` (default ``$RAGC_CACHE/bench/llamaindex-n<n>-seed<seed>``), so a killed run
resumes where it stopped. Writes ``--out`` (default ``benchmarks/results/llamaindex.md``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle
from tqdm import tqdm

from ragc import Pipeline
from ragc.config import build_component
from ragc.datasets import QAExample, load_dataset, sample_examples
from ragc.eval.metrics import exact_match, f1_score
from ragc.eval.report import command_line, cpu_flags, machine_info
from ragc.eval.stats import paired_bootstrap
from ragc.integrations.llama_index import RagcLLM, RagcNodePostprocessor, RagcRetriever, RagcSynthesizer
from ragc.paths import cache_dir

K = 5
DECODER = "qwen2.5-0.5b"
MAX_NEW = 32
LONG = "LongLLMLinguaPostprocessor (llmlingua-2)"
WARM_UP = "Which river flows through the city where the first modern Olympic Games were held?"


class Timed(BaseNodePostprocessor):
    """Wraps a postprocessor: times it and checks what it did to node ids and metadata."""

    inner: Any
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Timed"

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        before = {n.node.node_id: dict(n.node.metadata) for n in nodes}
        start = time.perf_counter()
        out = self.inner.postprocess_nodes(nodes, query_bundle)
        ms = 1000 * (time.perf_counter() - start)
        ids_kept = [n.node.node_id in before for n in out]
        meta_kept = [
            n.node.node_id in before
            and all(n.node.metadata.get(k) == v for k, v in before[n.node.node_id].items())
            for n in out
        ]
        self.calls.append(
            {
                "ms": ms,
                "in": len(nodes),
                "out": len(out),
                "ids": all(ids_kept) and bool(out),
                "meta": all(meta_kept) and bool(out),
            }
        )
        return out  # type: ignore[no-any-return]


@dataclass
class Row:
    name: str
    path: str  # native | llamaindex
    config: str  # the native configuration it should reproduce (none, sentences, tiered)
    answer: Callable[[str], dict[str, Any]] = field(repr=False)


def native_row(name: str, retriever: Any, compressor: Any, llm: RagcLLM) -> Row:
    pipe = Pipeline(retriever, build_component("compressor", compressor, "compressor"), llm.decoder, k=K)

    def answer(q: str) -> dict[str, Any]:
        start = time.perf_counter()
        a = pipe.ask(q)
        return {
            "prediction": a.text,
            "seconds": time.perf_counter() - start,
            "prompt_tokens": a.prompt_tokens,
            "context_tokens": a.context.kept_tokens,
            "post_ms": 1000 * a.timings.compress,
        }

    label = compressor if isinstance(compressor, str) else compressor["name"]
    return Row(name, "native", label, answer)


def engine_row(name: str, config: str, retriever: Any, llm: RagcLLM, post: Any | None) -> Row:
    timed = Timed(inner=post, calls=[]) if post is not None else None
    engine = RetrieverQueryEngine(
        retriever=RagcRetriever(retriever, k=K),
        response_synthesizer=RagcSynthesizer(llm),
        node_postprocessors=[timed] if timed is not None else [],
    )
    counter = llm.token_counter

    def answer(q: str) -> dict[str, Any]:
        start = time.perf_counter()
        r = engine.query(q)
        seconds = time.perf_counter() - start
        ctx = (
            sum(counter.count_batch([n.node.get_content() for n in r.source_nodes])) if r.source_nodes else 0
        )
        row = {
            "prediction": str(r.response),
            "seconds": seconds,
            "prompt_tokens": r.metadata["prompt_tokens"],
            "context_tokens": ctx,
            "post_ms": 0.0,
        }
        if timed is not None:
            call = timed.calls[-1]
            row.update(
                post_ms=call["ms"],
                nodes_in=call["in"],
                nodes_out=call["out"],
                ids_kept=call["ids"],
                meta_kept=call["meta"],
            )
        return row

    return Row(name, "llamaindex", config, answer)


def run_row(row: Row, examples: Sequence[QAExample], work: Path) -> list[dict[str, Any]]:
    """Answers for every example, resuming from ``work/<row>.jsonl``."""
    path = work / f"{row.name}.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["qid"]] = r
    todo = [e for e in examples if e.qid not in done]
    if todo:
        row.answer(WARM_UP)  # loads this row's models: no question is charged for it
    with path.open("a", encoding="utf-8") as f:
        for ex in tqdm(todo, desc=row.name, unit="q"):
            r = {"qid": ex.qid, **row.answer(ex.question)}
            r["em"], r["f1"] = exact_match(r["prediction"], ex.answers), f1_score(r["prediction"], ex.answers)
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            done[ex.qid] = r
    return [done[ex.qid] for ex in examples]


def interleaved_speed(
    posts: dict[str, Any], retriever: Any, examples: Sequence[QAExample], counter: Any, repeats: int
) -> dict[str, dict[str, float]]:
    """Median ms per call of each postprocessor on the same retrieved nodes, calls interleaved
    (rotating order, so whatever else the machine does weighs on all of them alike), and the
    rate each achieved in the decoder's tokens."""
    nodes = [RagcRetriever(retriever, k=K).retrieve(ex.question) for ex in examples]
    for post in posts.values():
        post.postprocess_nodes(nodes[0], QueryBundle(examples[0].question))  # warm-up
    times: dict[str, list[float]] = {name: [] for name in posts}
    kept: dict[str, list[float]] = {name: [] for name in posts}
    names = list(posts)
    for i, (ex, given) in enumerate(tqdm(list(zip(examples, nodes)), desc="speed", unit="q")):
        source = sum(counter.count_batch([n.node.get_content() for n in given]))
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                out = posts[name].postprocess_nodes(given, QueryBundle(ex.question))
                best = min(best, time.perf_counter() - start)
            times[name].append(1000 * best)
            kept[name].append(sum(counter.count_batch([n.node.get_content() for n in out])) / source)
    return {n: {"ms": statistics.median(times[n]), "rate": statistics.fmean(kept[n])} for n in names}


def mean(rows: Sequence[dict[str, Any]], key: str) -> float:
    return statistics.fmean(float(r[key]) for r in rows)


def share(rows: Sequence[dict[str, Any]], key: str) -> str:
    if not rows or key not in rows[0]:
        return "-"
    return f"{100 * sum(bool(r[key]) for r in rows) / len(rows):.0f}%"


def report(
    args: argparse.Namespace,
    rows: list[Row],
    results: dict[str, list[dict[str, Any]]],
    speed: dict[str, dict[str, float]],
) -> str:
    lines = [
        f"# LlamaIndex: ragc's adapters vs the native pipeline and LongLLMLinguaPostprocessor "
        f"(open-domain SQuAD dev, {args.n} questions)",
        "",
        "Produced by:",
        "",
        "```bash",
        command_line("python benchmarks/llamaindex.py", sys.argv[1:]),
        "```",
        "",
        f"Machine: {machine_info()}; CPU flags: {cpu_flags()}",
        "",
        f"Hybrid retrieval (MiniLM dense + BM25, RRF) over all 2,067 dev paragraphs, top {K}; decoder "
        f"{DECODER} (dtype auto), greedy, at most {MAX_NEW} new tokens; one question at a time; "
        f"compression rate {args.rate}.",
        "",
        "| row | path | n | EM | F1 | context tok | prompt tok | postprocess ms | end-to-end s "
        "| nodes in → out | node ids kept | metadata kept |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        rs = results[row.name]
        nodes = f"{mean(rs, 'nodes_in'):.1f} → {mean(rs, 'nodes_out'):.1f}" if "nodes_in" in rs[0] else "-"
        post = f"{mean(rs, 'post_ms'):.0f}" if row.config != "none" else "-"
        lines.append(
            f"| {row.name} | {row.path} | {len(rs)} "
            f"| {100 * mean(rs, 'em'):.1f} | {100 * mean(rs, 'f1'):.1f} "
            f"| {mean(rs, 'context_tokens'):.0f} | {mean(rs, 'prompt_tokens'):.0f} | {post} "
            f"| {mean(rs, 'seconds'):.2f} | {nodes} | {share(rs, 'ids_kept')} | {share(rs, 'meta_kept')} |"
        )
    lines += [
        "",
        "## The adapters add no loss: each LlamaIndex row against the native run of its configuration",
        "",
        "| LlamaIndex row | native row | identical answers | ΔF1 (LlamaIndex − native) | 95% CI "
        "| better / tied / worse | verdict |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    natives = {r.config: r for r in rows if r.path == "native"}
    for row in rows:
        base = natives.get(row.config)
        if row.path != "llamaindex" or base is None:
            continue
        a, b = results[base.name], results[row.name]
        same = sum(x["prediction"] == y["prediction"] for x, y in zip(a, b))
        d = paired_bootstrap([x["f1"] for x in a], [y["f1"] for y in b])
        lines.append(f"| {row.name} | {base.name} | {same}/{len(a)} | {d.markdown_cells()} |")
    if speed:
        theirs = speed.get(LONG, {}).get("ms")
        lines += [
            "",
            f"## Postprocessing speed, side by side ({args.speed_n} questions, calls interleaved)",
            "",
            "Each postprocessor on the same retrieved nodes of each question, in rotating order, best of "
            f"{args.repeats} calls; the median over questions. *kept rate* is the share of the nodes' "
            f"{DECODER} tokens the result holds.",
            "",
            "| postprocessor | ms per query | kept rate | LongLLMLinguaPostprocessor ms / this |",
            "| --- | ---: | ---: | ---: |",
        ]
        for n, v in speed.items():
            ratio = f"{theirs / v['ms']:.2f}x" if theirs else "-"
            lines.append(f"| {n} | {v['ms']:.0f} | {v['rate']:.2f} | {ratio} |")
    lines += ["", "## Notes", "", *NOTES]
    return "\n".join(lines) + "\n"


NOTES = [
    "- Every LlamaIndex row is `RetrieverQueryEngine(retriever=RagcRetriever(hybrid, k=5), "
    "response_synthesizer=RagcSynthesizer(RagcLLM(qwen2.5-0.5b)), node_postprocessors=[...])`. "
    "`RagcSynthesizer` sends the decoder the prompt `ragc.Pipeline` does (numbered passages with "
    "titles), so any difference from the native row is the adapters' doing.",
    "- *postprocess ms* is the postprocessor's own call (LlamaIndex rows) or the compressor's "
    "(native rows: `Answer.timings.compress`); *end-to-end s* is the whole `query()` / `ask()` "
    "call: retrieval, postprocessing, prefill and decoding.",
    "- *node ids kept*: every node that came out has the id of a node that went in; *metadata "
    "kept*: and all of that node's metadata. Shares of queries.",
    "- `LongLLMLinguaPostprocessor` (llama-index-postprocessor-longllmlingua 0.7.0, llmlingua 0.2.2) "
    "in LLMLingua-2 mode. Its constructor asserts the model name "
    "`microsoft/llmlingua-2-xlm-roberta-large-meetingbank` and builds that model itself (a hub "
    "download, `device_map='cuda'`), so it is made with `model_construct` and handed a "
    "`PromptCompressor` over ragc's packaged MiniLM token classifier, exported as a BERT token "
    "classifier (`benchmarks/llmlingua_package.py`, the same weights as ragc's `llmlingua2`); the "
    "rate goes in `additional_compress_kwargs`. It joins the nodes' texts into one string, ignores "
    "the question in this mode, and returns one node with a new id, no score and the input nodes' "
    "metadata nested under their ids. Its text is rebuilt from MiniLM's uncased word pieces, so "
    "it comes back lowercased. Its rate counts GPT-3.5 (cl100k) tokens per 510-token window; "
    "ragc's count the decoder's tokens over all nodes together.",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200, help="questions (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.33)
    p.add_argument("--only", default="", help="comma-separated row names (default: all)")
    p.add_argument("--speed-n", type=int, default=50, help="questions of the side-by-side speed table")
    p.add_argument("--repeats", type=int, default=3, help="calls per postprocessor and question (best kept)")
    p.add_argument("--work", type=Path, default=None, help="where per-row answers are kept (resume)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/llamaindex.md"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = load_dataset("squad-dev")
    examples = sample_examples(data.examples, args.n, args.seed)
    work = args.work or cache_dir() / "bench" / f"llamaindex-n{args.n}-seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    retriever = build_component("retriever", "hybrid", "retriever")
    retriever.index(list(data.corpus))
    llm = RagcLLM(model=DECODER, max_new_tokens=MAX_NEW)
    rate = args.rate

    def longllmlingua() -> Any:
        from longllmlingua_adapter import longllmlingua_postprocessor

        return longllmlingua_postprocessor(rate)

    builders: list[tuple[str, Callable[[], Row]]] = [
        ("native none", lambda: native_row("native none", retriever, "none", llm)),
        (
            "native sentences",
            lambda: native_row("native sentences", retriever, {"name": "sentences", "budget": rate}, llm),
        ),
        (
            "native tiered",
            lambda: native_row("native tiered", retriever, {"name": "tiered", "budget": rate}, llm),
        ),
        (
            "LlamaIndex, no postprocessor",
            lambda: engine_row("LlamaIndex, no postprocessor", "none", retriever, llm, None),
        ),
        (
            "RagcNodePostprocessor sentences",
            lambda: engine_row(
                "RagcNodePostprocessor sentences",
                "sentences",
                retriever,
                llm,
                RagcNodePostprocessor(compressor="sentences", budget=rate, tokenizer=llm),
            ),
        ),
        (
            "RagcNodePostprocessor tiered",
            lambda: engine_row(
                "RagcNodePostprocessor tiered",
                "tiered",
                retriever,
                llm,
                RagcNodePostprocessor(compressor="tiered", budget=rate, tokenizer=llm),
            ),
        ),
        (
            "RagcNodePostprocessor llmlingua2",
            lambda: engine_row(
                "RagcNodePostprocessor llmlingua2",
                "llmlingua2",
                retriever,
                llm,
                RagcNodePostprocessor(compressor="llmlingua2", budget=rate, tokenizer=llm),
            ),
        ),
        (
            "LongLLMLingua (llmlingua-2)",
            lambda: engine_row(
                "LongLLMLingua (llmlingua-2)", "longllmlingua", retriever, llm, longllmlingua()
            ),
        ),
    ]
    names = [n for n, _ in builders]
    only = [x.strip() for x in args.only.split(",") if x.strip()] or names
    unknown = sorted(set(only) - set(names))
    if unknown:
        print(f"Unknown row(s) {unknown}. Valid: {names}.", file=sys.stderr)
        return 2
    rows, results = [], {}
    for name, build in builders:
        if name not in only:
            continue
        row = build()
        results[name] = run_row(row, examples, work)
        rows.append(row)
    speed: dict[str, dict[str, float]] = {}
    if args.speed_n:
        posts = {
            f"RagcNodePostprocessor {c}": RagcNodePostprocessor(compressor=c, budget=rate, tokenizer=llm)
            for c in ("sentences", "tiered", "llmlingua2")
        }
        posts[LONG] = longllmlingua()
        speed = interleaved_speed(posts, retriever, examples[: args.speed_n], llm.token_counter, args.repeats)
    text = report(args, rows, results, speed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
