"""The ``ragc`` command line: demo, index, ask, eval, train, cache.

Heavy libraries are imported inside the handlers so ``ragc --help`` stays fast. Every
:class:`ragc.errors.RagcError` becomes a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragc.errors import InvalidArgumentError, RagcError


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline config from --config plus the command-line overrides."""
    from ragc.config import PipelineConfig

    cfg = PipelineConfig.load(args.config).to_dict() if args.config else PipelineConfig().to_dict()
    if getattr(args, "closed_book", False):
        cfg["retriever"] = None
    elif getattr(args, "retriever", None):
        cfg["retriever"] = {"name": args.retriever}
    if getattr(args, "compressor", None):
        cfg["compressor"] = {"name": args.compressor}
    if getattr(args, "budget", None) is not None:
        cfg["compressor"]["budget"] = args.budget
    if getattr(args, "decoder", None):
        cfg["decoder"] = {**cfg["decoder"], "model": args.decoder}
    if getattr(args, "k", None) is not None:
        cfg["k"] = args.k
    return cfg


def _budget(value: str) -> float | int:
    """A float with a '.' is a rate, an integer is a token budget."""
    try:
        return float(value) if "." in value or "e" in value.lower() else int(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"budget must be a rate like 0.33 or a token count, got {value!r}"
        ) from e


def _add_pipeline_args(p: argparse.ArgumentParser, *, retrieval: bool = True) -> None:
    p.add_argument("--config", help="pipeline YAML (retriever/compressor/decoder/k)")
    if retrieval:
        p.add_argument("--retriever", help="retriever name (dense, bm25, hybrid)")
        p.add_argument("-k", type=int, help="passages to retrieve (default 5)")
    p.add_argument("--compressor", help="compressor name (none, truncate, sentences, ...)")
    p.add_argument("--budget", type=_budget, help="compression rate in (0, 1] or an int token budget")
    p.add_argument("--decoder", help="decoder model: qwen2.5-0.5b, smollm2-135m, an HF id or a path")


def _format_answer(i: int, a: Any, gold: Sequence[str] = ()) -> str:
    t = a.timings
    expected = f"   (expected: {' | '.join(gold)})" if gold else ""
    lines = [f"Q{i}: {a.query}", f"  answer: {a.text}{expected}"]
    for seg in a.context.segments:
        pid = getattr(seg, "passage_id", None)
        if pid is None:
            lines.append(f"  used soft segment for {', '.join(seg.passage_ids)} ({seg.tokens} embeddings)")
            continue
        spans = ", ".join(f"{s}-{e}" for s, e in seg.spans)
        snippet = seg.text if len(seg.text) <= 90 else seg.text[:87] + "..."
        lines.append(f"  used [{pid}] chars {spans}: {snippet}")
    lines.append(
        f"  tokens: {a.context.source_tokens} retrieved -> {a.context.kept_tokens} kept "
        f"(ratio {a.context.ratio:.2f}x), prompt {a.prompt_tokens}; "
        f"time: retrieve {t.retrieve * 1e3:.0f} ms, compress {t.compress * 1e3:.0f} ms, "
        f"prefill {t.prefill * 1e3:.0f} ms, decode {t.decode * 1e3:.0f} ms, "
        f"TTFT {t.ttft * 1e3:.0f} ms; peak RSS {a.peak_memory_mb:.0f} MiB"
    )
    lines += [f"  warning: {w}" for w in a.warnings]
    return "\n".join(lines)


# What `ragc demo` compresses with unless --config, --compressor or --budget says otherwise:
# query-aware sentence selection at a third of the tokens (benchmarks/results/llmlingua2.md:
# F1 45.2 against 43.2 uncompressed at TTFT 0.51x on SQuAD dev with qwen2.5-0.5b).
DEMO_COMPRESSOR = {"name": "sentences", "budget": 0.33}


def cmd_demo(args: argparse.Namespace) -> int:
    from ragc import registry
    from ragc.corpus import load_corpus
    from ragc.pipelines.rag import Pipeline

    if args.n < 1:
        raise InvalidArgumentError(f"-n must be at least 1 (demo questions to answer), got {args.n}.")
    data = Path(__file__).parent / "data"
    passages = load_corpus(data / "demo_corpus.jsonl")
    lines = (data / "demo_questions.jsonl").read_text("utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()][: args.n]
    cfg = _overrides(args)
    if not (args.config or args.compressor):
        budget = DEMO_COMPRESSOR["budget"] if args.budget is None else args.budget
        cfg["compressor"] = {**DEMO_COMPRESSOR, "budget": budget}
    print(f"[ragc] demo: {len(passages)} bundled passages, {len(questions)} questions")
    print(f"[ragc] pipeline: {json.dumps(cfg)}")
    pipe = Pipeline.from_config(cfg)
    if pipe.retriever is not None:
        pipe.index(passages)
    # The same retrieval and decoder reading the passages whole, unless there is nothing to
    # compare (no compression, or no retrieval).
    plain = None
    if args.compare and pipe.retriever is not None and cfg["compressor"]["name"] != "none":
        none = {"name": "none"}
        plain = Pipeline(pipe.retriever, registry.create("compressor", "none"), pipe.decoder, pipe.k,
                         {**cfg, "compressor": none})
    if plain is not None and questions:
        pipe.ask(questions[0]["question"])  # untimed: first calls load kernels, not a fair TTFT
    rows = []
    for i, q in enumerate(questions, 1):
        gold = q.get("answers", ())
        a = pipe.ask(q["question"])
        print(_format_answer(i, a, gold))
        row = [a]
        if plain is not None:
            b = plain.ask(q["question"])
            print(f"  uncompressed: {b.text}   ({b.context.kept_tokens} context tokens, "
                  f"TTFT {b.timings.ttft * 1e3:.0f} ms)")
            row.append(b)
        rows.append((gold, row))
    label = "closed-book" if pipe.retriever is None else _spec_label(cfg["compressor"])
    print(_demo_summary(label, rows))
    return 0


def _spec_label(compressor: dict[str, Any]) -> str:
    """``name@budget`` of a compressor spec (``name`` alone without a budget)."""
    return compressor["name"] + (f"@{compressor['budget']:g}" if "budget" in compressor else "")


def _demo_summary(name: str, rows: Sequence[tuple[Sequence[str], list[Any]]]) -> str:
    """Correct answers, context tokens and TTFT per pipeline (``name``, then uncompressed)."""
    from ragc.eval.metrics import answer_contained

    n = len(rows)
    lines = [f"[ragc] summary over {n} question{'s' if n != 1 else ''} "
             "(correct: the answer contains a gold answer):"]
    columns = list(zip(*(row for _, row in rows)))
    stats = []
    for answers in columns:
        correct = sum(bool(g) and answer_contained(a.text, g) for a, (g, _) in zip(answers, rows))
        tokens = sum(a.context.kept_tokens for a in answers) / n
        ttft = sum(a.timings.ttft for a in answers) / n
        stats.append((correct, tokens, ttft))
    for label, (correct, tokens, ttft) in zip((name, "uncompressed"), stats):
        lines.append(
            f"  {label:>16}: {correct}/{n} correct, {tokens:.0f} context tokens, TTFT {ttft * 1e3:.0f} ms"
        )
    if len(stats) == 2 and stats[0][1] > 0 and stats[1][2] > 0:
        lines.append(f"  {name} reads {stats[1][1] / stats[0][1]:.1f}x fewer context tokens; "
                     f"TTFT {stats[0][2] / stats[1][2]:.2f}x the uncompressed prompt's")
    return "\n".join(lines)


def cmd_ask(args: argparse.Namespace) -> int:
    from ragc.config import PipelineConfig
    from ragc.pipelines.rag import Pipeline

    cfg = PipelineConfig.from_dict(_overrides(args))
    # Build the compressor first: a bad setting is reported before the corpus is indexed.
    compressor = cfg.compressor.build()
    retriever = None
    if cfg.retriever is not None:
        if args.index:
            from ragc.retrievers import load_index

            retriever = load_index(args.index)
        elif args.corpus:
            from ragc.corpus import load_corpus

            retriever = cfg.retriever.build()
            retriever.index(load_corpus(args.corpus))
        else:
            raise RagcError("ragc ask needs --index DIR or --corpus PATH (or --closed-book).")
    pipe = Pipeline(retriever, compressor, cfg.decoder.build(), cfg.k, cfg.to_dict())
    answer = pipe.ask(args.question)
    if args.json:
        print(json.dumps(_answer_json(answer), ensure_ascii=False, indent=2))
    else:
        print(_format_answer(1, answer))
    return 0


def _answer_json(a: Any) -> dict[str, Any]:
    return {
        "query": a.query,
        "answer": a.text,
        "passages": [{"id": s.passage.id, "score": s.score, "rank": s.rank} for s in a.passages],
        "context": [
            {
                "passage_id": getattr(s, "passage_id", None),
                "spans": getattr(s, "spans", None),
                "tokens": s.tokens,
            }
            for s in a.context.segments
        ],
        "source_tokens": a.context.source_tokens,
        "kept_tokens": a.context.kept_tokens,
        "compression_ratio": a.context.ratio,
        "prompt_tokens": a.prompt_tokens,
        "timings": {**vars(a.timings), "ttft": a.timings.ttft, "total": a.timings.total},
        "peak_memory_mb": a.peak_memory_mb,
        "truncated_tokens": a.truncated_tokens,
        "warnings": list(a.warnings),
    }


def cmd_index_build(args: argparse.Namespace) -> int:
    from ragc import registry
    from ragc.corpus import load_corpus

    passages = load_corpus(args.corpus)
    retriever = registry.create("retriever", args.retriever)
    retriever.index(passages)
    retriever.save(args.out)
    print(f"[ragc] indexed {len(passages)} passages with {args.retriever!r} into {args.out}")
    return 0


def cmd_index_info(args: argparse.Namespace) -> int:
    from ragc.retrievers.base import read_manifest

    print(json.dumps(read_manifest(args.dir), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import shlex

    from ragc.eval.report import format_table, markdown_report, plot
    from ragc.eval.runner import EvalSpec, run_eval

    cfg = _overrides(args)
    name = args.name or "eval"
    spec = EvalSpec(name=name, pipeline=cfg, n_questions=args.n, seed=args.seed)
    run_dir = Path(args.run_dir or f"runs/{name}")
    summary = run_eval(spec, run_dir)
    command = "ragc " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    plot([summary], run_dir / "plot.png")
    report = markdown_report(
        [summary], f"ragc eval: {name}", command, [f"pipeline: `{json.dumps(cfg)}`"], image="plot.png"
    )
    (run_dir / "report.md").write_text(report, encoding="utf-8")
    print(format_table([summary]))
    print(f"[ragc] predictions.jsonl, summary.json, report.md and plot.png in {run_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ragc.eval.stats import compare_runs

    for metric in args.metric:
        d = compare_runs(Path(args.run_a), Path(args.run_b), metric, args.resamples, args.seed)
        print(f"{metric}: b {d.describe()} ({d.verdict})")
    return 0


def _build_teacher_labels(args: argparse.Namespace) -> None:
    """Teacher labels on SQuAD *train* paragraphs (resumable), before training."""
    from ragc import registry
    from ragc.training.labels import build_labels, squad_train_items

    name = "perplexity" if args.teacher_mode == "self_information" else "perplexity-contrastive"
    teacher = registry.create("compressor", name, model=args.teacher)
    items = squad_train_items(args.build_labels, args.seed)
    added = build_labels(items, teacher, keep_rate=args.keep_rate, out=Path(args.labels))
    print(f"[ragc] {added} new teacher-labelled paragraphs in {args.labels} ({name}, {args.teacher})")


def cmd_train_llmlingua2(args: argparse.Namespace) -> int:
    from ragc.training.llmlingua2 import train_llmlingua2

    labels = Path(args.labels)
    if args.build_labels:
        _build_teacher_labels(args)
    if args.qa_boost:
        from ragc.training.labels import read_labels, squad_qa_relabel, write_labels

        boosted = labels.with_name(f"{labels.stem}-qa{labels.suffix}")
        write_labels(squad_qa_relabel(read_labels(labels), keep_rate=args.keep_rate), boosted)
        print(f"[ragc] teacher scores + SQuAD train answers/questions -> {boosted}")
        labels = boosted
    metrics = train_llmlingua2(
        labels,
        args.out,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        max_items=args.max_items,
        trained_layers=args.layers,
        loss=args.loss,
    )
    print(json.dumps(metrics["final"], indent=2))
    print(
        f"[ragc] LLMLingua-2 weights in {args.out}; use them with "
        f"--compressor llmlingua2 (weights={args.out!r} in the config)"
    )
    return 0


def cmd_train_xrag(args: argparse.Namespace) -> int:
    from ragc.training.xrag import XRAGTrainConfig, train_xrag

    cfg = XRAGTrainConfig(
        decoder=args.decoder, encoder=args.encoder, stage1_paragraphs=args.stage1,
        stage2_questions=args.stage2, max_target_tokens=args.max_target_tokens,
        batch_size=args.batch_size, lr=args.lr, kl_weight=args.kl_weight, seed=args.seed, init=args.init,
        contrast_weight=args.contrast_weight, contrast_margin=args.contrast_margin,
        norm_output=args.norm_output, align_steps=args.align_steps, align_paragraphs=args.align_paragraphs,
    )
    record = train_xrag(args.out, cfg, device=args.device)
    print(json.dumps(record, indent=2))
    print(f"[ragc] xRAG projector in {args.out}; use it with --compressor xrag "
          f"(weights={args.out!r} in the config)")
    return 0


def cmd_train_compllm(args: argparse.Namespace) -> int:
    from ragc.training.compllm import CompLLMTrainConfig, train_compllm

    try:
        rates = tuple(float(x) for x in args.rates.split(",") if x.strip())
    except ValueError as e:
        raise InvalidArgumentError(f"--rates must be comma-separated numbers, got {args.rates!r}.") from e
    cfg = CompLLMTrainConfig(
        decoder=args.decoder, questions=args.questions, rates=rates, segment_tokens=args.segment_tokens,
        batch_size=args.batch_size, lr=args.lr, kl_weight=args.kl_weight, lora_rank=args.lora_rank,
        seed=args.seed, recon_steps=args.recon_steps, recon_batch=args.recon_batch,
        recon_segments=args.recon_segments, contrast_weight=args.contrast_weight,
        contrast_margin=args.contrast_margin, answer_window=args.answer_window,
    )
    record = train_compllm(args.out, cfg, device=args.device)
    print(json.dumps(record, indent=2))
    print(f"[ragc] CompLLM weights in {args.out}; use them with --compressor compllm "
          f"(weights={args.out!r} in the config)")
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cmd_cache(args: argparse.Namespace) -> int:
    from ragc.cache import SegmentCache

    cache = SegmentCache(args.dir) if args.dir else SegmentCache()
    if args.cache_command == "clear":
        removed = cache.clear()
        print(f"[ragc] removed {removed} cached segments from {cache.root}")
        return 0
    info = cache.info()
    if args.json:
        print(json.dumps({k: v for k, v in info.items() if k != "stats"}, indent=2))
    else:
        print(f"segment cache: {info['root']}")
        print(f"  entries: {info['entries']}")
        print(f"  size:    {_human(info['bytes'])} of {_human(info['max_bytes'])} cap")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragc", description="Cheap retrieval-augmented generation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="answer questions over the bundled demo corpus")
    _add_pipeline_args(p)
    p.add_argument("--closed-book", action="store_true", help="answer without retrieval")
    p.add_argument("-n", type=int, default=8, help="number of demo questions")
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="do not also answer each question from the uncompressed passages")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ask", help="answer one question")
    p.add_argument("question")
    _add_pipeline_args(p)
    p.add_argument("--index", help="index directory built by `ragc index build`")
    p.add_argument("--corpus", help="corpus to index on the fly (JSONL, CSV or folder)")
    p.add_argument("--closed-book", action="store_true", help="answer without retrieval")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("index", help="build or inspect an index")
    isub = p.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="index a corpus (JSONL, CSV or a folder of .txt/.md)")
    b.add_argument("corpus")
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument("--retriever", default="hybrid", help="dense, bm25 or hybrid (default)")
    b.set_defaults(func=cmd_index_build)
    i = isub.add_parser("info", help="print an index manifest")
    i.add_argument("dir")
    i.set_defaults(func=cmd_index_info)

    p = sub.add_parser("eval", help="open-domain SQuAD v1.1 dev evaluation")
    _add_pipeline_args(p)
    p.add_argument("--closed-book", action="store_true", help="no retrieval (the floor)")
    p.add_argument("-n", type=int, default=200, help="questions (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="run name (default: eval)")
    p.add_argument("--run-dir", help="output directory (default runs/<name>); re-run to resume")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "compare", help="paired bootstrap of two eval runs on their shared questions (is b better than a?)"
    )
    p.add_argument("run_a", help="run directory (holds predictions.jsonl)")
    p.add_argument("run_b", help="run directory compared against run_a")
    p.add_argument(
        "--metric", nargs="+", default=["em", "f1"], choices=["em", "f1", "contained"], help="default: em f1"
    )
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("train", help="train a learned component")
    tsub = p.add_subparsers(dest="train_command", required=True)
    t = tsub.add_parser("llmlingua2", help="train the LLMLingua-2 keep/drop classifier on MiniLM")
    t.add_argument("--labels", required=True, help="labels JSONL (id, text, words, labels per word)")
    t.add_argument("--out", required=True, help="folder to write config.json + weights.safetensors")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-items", type=int, help="use only the first N labelled rows")
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--batch-size", type=int, default=16, help="windows per step (default 16)")
    t.add_argument("--layers", type=int, default=1, help="top encoder layers to fine-tune (default 1)")
    t.add_argument("--loss", choices=["bce", "balanced"], default="bce")
    t.add_argument(
        "--build-labels",
        type=int,
        metavar="N",
        help="first label N SQuAD train paragraphs with the teacher (resumable)",
    )
    t.add_argument("--teacher", default="qwen2.5-0.5b", help="teacher LM for --build-labels")
    t.add_argument(
        "--teacher-mode",
        choices=["self_information", "contrastive"],
        default="self_information",
        help="teacher score (contrastive uses each paragraph's question)",
    )
    t.add_argument("--keep-rate", type=float, default=0.4, help="share of words labelled keep")
    t.add_argument("--qa-boost", action="store_true",
                   help="relabel with the paragraphs' SQuAD train answers and question words added to "
                        "the teacher scores (writes <labels>-qa.jsonl and trains on it)")
    t.set_defaults(func=cmd_train_llmlingua2)
    t = tsub.add_parser("xrag", help="train an xRAG projector (retriever embedding -> one decoder token)")
    t.add_argument("--out", required=True, help="folder for config.json + weights.safetensors (+ checkpoint)")
    t.add_argument("--decoder", default="qwen2.5-0.5b", help="decoder the projector feeds")
    t.add_argument("--encoder", default="minilm", help="retriever encoder whose embeddings it reads")
    t.add_argument("--stage1", type=int, default=1200, help="SQuAD train paragraphs for reconstruction")
    t.add_argument("--stage2", type=int, default=1200, help="SQuAD train questions for QA distillation")
    t.add_argument("--max-target-tokens", type=int, default=48, help="reconstruction target length")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--kl-weight", type=float, default=1.0, help="weight of the KL term in stage 2")
    t.add_argument("--contrast-weight", type=float, default=1.0,
                   help="weight of the hinge asking a document's own token to explain its target better "
                        "than another document's token (0 = off; without it the projector can collapse)")
    t.add_argument("--contrast-margin", type=float, default=0.3, help="hinge margin in nats per target token")
    t.add_argument("--norm-output", action=argparse.BooleanOptionalAction, default=True,
                   help="rescale every token to the decoder's median input-embedding norm (default on)")
    t.add_argument("--align-steps", type=int, default=200,
                   help="stage-0 lexical warm start steps (no decoder forward; 0 = off; skipped with --init)")
    t.add_argument("--align-paragraphs", type=int, default=0,
                   help="extra SQuAD train paragraphs for the warm start, beyond the stages' own")
    t.add_argument("--init", help="continue from a projector: 'packaged' or a folder (same decoder and "
                        "encoder); use --stage1 0 to train stage 2 only")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    t.set_defaults(func=cmd_train_xrag)
    t = tsub.add_parser("compllm", help="train CompLLM's LoRA + concept head (segment-wise soft compression)")
    t.add_argument("--out", required=True, help="folder for config.json + weights.safetensors (+ checkpoint)")
    t.add_argument("--decoder", default="qwen2.5-0.5b", help="decoder to compress for (and with)")
    t.add_argument("--questions", type=int, default=800, help="SQuAD train questions to distil on")
    t.add_argument("--rates", default="0.5,0.25", help="compression rates cycled during training")
    t.add_argument("--segment-tokens", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--kl-weight", type=float, default=1.0)
    t.add_argument("--lora-rank", type=int, default=8)
    t.add_argument("--recon-steps", type=int, default=0,
                   help="stage 1: steps of repeating paragraph windows from their concepts (0: none)")
    t.add_argument("--recon-batch", type=int, default=8, help="windows per stage-1 step")
    t.add_argument("--recon-segments", type=int, default=2, help="segments per stage-1 window")
    t.add_argument("--contrast-weight", type=float, default=0.0,
                   help="answer-stage hinge: own paragraph's concepts must beat another's (0 = off)")
    t.add_argument("--contrast-margin", type=float, default=1.0, help="hinge margin in nats")
    t.add_argument("--answer-window", type=int, default=0,
                   help="answer stage reads only this many segments around the answer (0: whole paragraph)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    t.set_defaults(func=cmd_train_compllm)

    p = sub.add_parser("cache", help="inspect or clear the compressed-segment cache")
    csub = p.add_subparsers(dest="cache_command", required=True)
    for name, text in (("info", "entries and bytes on disk"), ("clear", "delete every cached segment")):
        c = csub.add_parser(name, help=text)
        c.add_argument("--dir", help="cache directory (default $RAGC_CACHE/segments)")
        if name == "info":
            c.add_argument("--json", action="store_true", help="print as JSON")
        c.set_defaults(func=cmd_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RagcError as e:
        print(f"ragc: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ragc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
