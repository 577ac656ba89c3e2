"""Does the gold answer survive compression? A decoder-free view of the extractive benchmark.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/answer_kept.py [--n 200] [--only name,...]

Takes the runs of ``benchmarks/llmlingua2.py`` (the same specs: 200 SQuAD dev questions,
seed 0, hybrid retrieval, k=5), compresses each question's top-5 passages again with the
run's compressor and checks whether a gold answer still appears in the compressed context
(SQuAD normalisation, whole tokens). No decoder weights are loaded: the decoder's
tokenizer only counts the budget. Where a run of the extractive benchmark exists under
``--runs``, its per-question F1 is joined in, which splits a compressor's loss into what it
threw away (answer kept) and how well the decoder reads what is left (F1 when kept).
Writes ``benchmarks/results/answer_kept.md``. Each row's result is kept in
``<runs>/<name>/answer_kept.json``, so a killed run resumes row by row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llmlingua2 import DECODER, add_run_arguments, specs
from tqdm import tqdm

from ragc.datasets import load_dataset, sample_examples
from ragc.eval.metrics import answer_kept, mean_percent
from ragc.eval.report import command_line, machine_info
from ragc.eval.retrieval import retrieve_all
from ragc.eval.runner import PREDICTIONS_FILE, EvalSpec, read_predictions
from ragc.io import write_json

# Runs that read the decoder's own scores (perplexity: minutes per run when its segment
# cache is cold) are left out unless named with --only.
SLOW = ("perplexity",)


def default_names(all_specs: list[EvalSpec]) -> list[str]:
    return [s.name for s in all_specs if not s.name.startswith(SLOW)]


def measure(spec: EvalSpec, hits: dict[str, list[Any]], examples: list[Any]) -> dict[str, Any]:
    """Compress every question's top-k with the spec's compressor: answer kept, rate."""
    from ragc.pipelines.rag import Pipeline

    cfg = json.loads(json.dumps(spec.pipeline))
    if cfg["compressor"].get("cache") == "refresh":  # reuse the teacher's cached scores
        cfg["compressor"]["cache"] = "on"
    pipe = Pipeline.from_config(cfg)  # the decoder's weights load lazily: never here
    kept: dict[str, float] = {}
    source = target = 0
    for ex in tqdm(examples, desc=spec.name, unit="q", leave=False):
        context = pipe.compress(ex.question, hits[ex.qid][: pipe.k])
        if context is None:
            raise RuntimeError(f"{spec.name}: no passages retrieved for {ex.qid}")
        value = answer_kept(context.text, ex.answers)
        if value is None:
            raise RuntimeError(f"{spec.name}: the context has soft segments, not text")
        kept[ex.qid] = value
        source += context.source_tokens
        target += context.kept_tokens
    return {"kept": kept, "rate": target / source if source else 1.0}


RESULT_FILE = "answer_kept.json"  # per run: resumes a killed benchmark row by row


def measure_cached(
    spec: EvalSpec, hits: dict[str, list[Any]], examples: list[Any], path: Path
) -> dict[str, Any]:
    """:func:`measure`, reusing ``path`` when it holds this exact spec's result (same
    pipeline and questions); a new result is written atomically (temp file + rename)."""
    key = {"pipeline": spec.pipeline, "qids": [ex.qid for ex in examples]}
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            saved = None  # torn or edited by hand: measure again
        if isinstance(saved, dict) and saved.get("key") == key:
            print(f"{spec.name}: reusing {path}", flush=True)
            return {"kept": saved["kept"], "rate": saved["rate"]}
    got = measure(spec, hits, examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"key": key, **got})
    return got


def join_f1(run_dir: Path, kept: dict[str, float]) -> tuple[float | None, float | None, float | None]:
    """(F1, F1 where the answer was kept, F1 where it was cut) from the decoder run, if finished."""
    rows = read_predictions(run_dir / PREDICTIONS_FILE)
    if any(q not in rows for q in kept):
        return None, None, None
    f1 = {q: float(rows[q]["f1"]) for q in kept}
    with_answer = [f1[q] for q, k in kept.items() if k]
    without = [f1[q] for q, k in kept.items() if not k]
    return (
        mean_percent(f1.values()),
        mean_percent(with_answer) if with_answer else None,
        mean_percent(without) if without else None,
    )


def _cell(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def report(rows: list[dict[str, Any]], command: str, n: int) -> str:
    base = next((r for r in rows if r["name"] == "uncompressed"), None)
    lines = [
        f"# Answer kept by extractive compression: open-domain SQuAD v1.1 dev, {n} questions",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_info()}",
        "",
        "| run | achieved rate | answer kept | kept vs uncompressed | F1 (decoder run) "
        "| F1 where kept | F1 where cut |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rel = f"{100 * r['answer_kept'] / base['answer_kept']:.0f}%" if base and base["answer_kept"] else "-"
        lines.append(
            f"| {r['name']} | {r['rate']:.3f} | {r['answer_kept']:.1f} | {rel} | {_cell(r['f1'])} "
            f"| {_cell(r['f1_kept'])} | {_cell(r['f1_cut'])} |"
        )
    lines += [
        "",
        "`answer kept`: % of questions whose gold answer (any of them, SQuAD-normalised, whole "
        "tokens) still appears in the compressed top-5 context; for `uncompressed` it is answer "
        "recall of the retrieval, the ceiling of every row. `F1 (decoder run)` is the run's F1 in "
        f"the extractive benchmark (`benchmarks/llmlingua2.py`, decoder {DECODER}); `F1 where "
        "kept` / `where cut` split it by whether the answer survived. Compression is "
        "deterministic (`random` is seeded by the text), so these are the contexts that run's "
        "decoder read. Names as in "
        "`llmlingua2.md`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_run_arguments(p)  # the extractive benchmark's: same questions, same run directories
    p.add_argument(
        "--only", default="", help="comma-separated run names (default: all but the perplexity teacher)"
    )
    args = p.parse_args(argv)
    all_specs = specs(args.n, args.seed, args.decoder, str(args.runs / "segments"))
    by_name = {s.name: s for s in all_specs}
    only = [x.strip() for x in args.only.split(",") if x.strip()] or default_names(all_specs)
    if unknown := sorted(set(only) - set(by_name)):
        print(f"Unknown run(s) {', '.join(unknown)}. Valid: {', '.join(by_name)}", file=sys.stderr)
        return 2
    from ragc.pipelines.rag import Pipeline

    data = load_dataset("squad-dev")
    examples = sample_examples(data.examples, args.n, args.seed)
    first = by_name["uncompressed"]
    retrieval = Pipeline.from_config(first.pipeline)
    # Every spec retrieves with the same hybrid retriever: one retrieval for all, cached (and
    # usually already there) in the uncompressed run's directory, as that run would cache it.
    depth = max(*first.recall_ks, retrieval.k)
    (args.runs / first.name).mkdir(parents=True, exist_ok=True)
    hits = retrieve_all(retrieval, data, examples, depth, args.runs / first.name).hits
    rows = []
    for name in [s.name for s in all_specs if s.name in only]:
        spec = by_name[name]
        if spec.pipeline.get("retriever") != first.pipeline["retriever"] or spec.pipeline["k"] != retrieval.k:
            raise SystemExit(f"{name}: retrieval differs from the uncompressed run's; not comparable")
        got = measure_cached(spec, hits, examples, args.runs / name / RESULT_FILE)
        f1, f1_kept, f1_cut = join_f1(args.runs / name, got["kept"])
        rows.append(
            {
                "name": name,
                "rate": got["rate"],
                "answer_kept": mean_percent(got["kept"].values()),
                "f1": f1,
                "f1_kept": f1_kept,
                "f1_cut": f1_cut,
            }
        )
        print(f"{name}: answer kept {rows[-1]['answer_kept']:.1f}%, rate {got['rate']:.3f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = command_line("python benchmarks/answer_kept.py", sys.argv[1:] if argv is None else argv)
    text = report(rows, command, args.n)
    (args.out / "answer_kept.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
