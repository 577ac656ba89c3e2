"""KV page retrieval (``page_retrieval``, Quest-style) against full attention and kvpress.

Usage (from the repository root; nothing is downloaded)::

    bash benchmarks/setup_kvpress_env.sh        # once, for part (d); without it (d) is skipped
    python benchmarks/kv.py                      # writes benchmarks/results/kv.md

Decoder ``qwen2.5-0.5b`` (greedy, 16 new tokens, fp32 on the CPU as kvpress runs), page size
16, sink 16 and recent 16 tokens, layers 0 and 1 dense. All parts run in one process, one
after another (two torch jobs at once oversubscribe a 2-core machine):

(a) needle: a 5-7 digit pass key hidden at depths 0-100% of SQuAD-paragraph filler of 4k,
    8k and 16k tokens; each sample is prefilled once and decoded under full attention and
    budgets 256, 512 and 1024 from copies of its cache (:mod:`ragc.eval.longctx`).
(b) attention time of one decoding step at 8k, 16k and 32k cached tokens, real model shapes
    (14 query heads, 2 KV heads of 64 dims; the timing does not depend on the key values, so
    keys are random): a paged layer (page-bound update, selection, attention; the torch path
    this CPU runs) against the dense SDPA attention transformers runs, and all 24 layers with
    the two dense ones; with the fraction of KV bytes each reads. Calls are interleaved,
    median of ``--repeats``.
(c) long-context QA: a SQuAD dev question with its gold paragraph among 30 distractors, no
    retrieval: EM/F1 of full attention and budgets 512 and 1024 (paired bootstrap against
    full), and decode tokens/s.
(d) kvpress's prefill-time presses at the same KV budget on the first 4k needle samples
    (``benchmarks/kvpress_needle.py`` in ``.venv-kvpress``, same converted weights).

Runs are kept under ``--work`` (default ``$RAGC_CACHE/bench/kv``): a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ragc.eval.longctx import LongContextSpec, run_long_context
from ragc.eval.report import command_line, cpu_flags, machine_info
from ragc.eval.stats import paired_bootstrap
from ragc.paths import cache_dir

ROOT = Path(__file__).resolve().parent.parent
# fp32: the fast dtype on AVX2-only CPUs, and the dtype kvpress runs in (part d)
DECODER = {"model": "qwen2.5-0.5b", "max_new_tokens": 16, "placement": {"device": "cpu", "dtype": "float32"}}


def policies(budgets: list[int]) -> dict[str, Any]:
    return {
        "full": "dense",
        **{f"budget {b}": {"name": "page_retrieval", "token_budget": b} for b in budgets},
    }


# -- (a) and (c) -----------------------------------------------------------------------------
def needle(args: argparse.Namespace, decoder: Any) -> list[dict[str, Any]]:
    cells = []
    for length, per_cell in zip(args.lengths, args.per_cell):
        spec = LongContextSpec(
            f"needle-{length}",
            task="needle",
            policies=policies(args.budgets),
            lengths=(length,),
            depths=tuple(args.depths),
            per_cell=per_cell,
            decoder=DECODER,
        )
        cells += run_long_context(spec, args.work / f"needle-{length}", decoder=decoder)["cells"]
    return cells


def longqa(args: argparse.Namespace, decoder: Any) -> tuple[list[dict[str, Any]], list[str]]:
    spec = LongContextSpec(
        "longqa",
        task="longqa",
        policies=policies(args.qa_budgets),
        n_questions=args.qa_n,
        distractors=args.distractors,
        decoder=DECODER,
    )
    run = args.work / f"longqa-{args.qa_n}-{args.distractors}"
    summary = run_long_context(spec, run, decoder=decoder)
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines() if line.strip()]
    full = {r["sample"]: r for r in rows if r["policy"] == "full"}
    lines = []
    for label in policies(args.qa_budgets):
        if label == "full":
            continue
        mine = {r["sample"]: r for r in rows if r["policy"] == label}
        shared = sorted(set(full) & set(mine))
        diff = paired_bootstrap([full[s]["f1"] for s in shared], [mine[s]["f1"] for s in shared])
        lines.append(f"- F1, {label} vs full: {diff.describe()}")
    return summary["cells"], lines


# -- (b) -------------------------------------------------------------------------------------
def attention_times(args: argparse.Namespace, dtypes: list[Any]) -> list[dict[str, Any]]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from ragc import kernels
    from ragc.kv import PageRetrieval

    class Layer(torch.nn.Module):  # what sdpa_attention_forward reads off an attention module
        num_key_value_groups, is_causal, layer_idx = 7, True, 5

    policy, layer = PageRetrieval(token_budget=1024), Layer()
    hq, hkv, dim, layers, dense_layers = 14, 2, 64, 24, 2
    out = []
    for dtype, length in ((d, n) for d in dtypes for n in args.speed_lengths):
        g = torch.Generator().manual_seed(length)
        k = torch.randn(1, hkv, length, dim, generator=g).to(dtype)
        v = torch.randn(1, hkv, length, dim, generator=g).to(dtype)
        q = torch.randn(1, hq, 1, dim, generator=g).to(dtype)
        start = torch.zeros(1, dtype=torch.long)
        mins, maxs = kernels.page_meta(k, 16, start)
        n_pages = mins.shape[2]
        keep = torch.zeros(1, n_pages, dtype=torch.bool)
        keep[:, :1] = keep[:, -2:] = True

        def dense(q: Any = q, k: Any = k, v: Any = v) -> Any:
            return sdpa_attention_forward(layer, q, k, v, None, scaling=dim**-0.5)

        def paged(q: Any = q, k: Any = k, v: Any = v, bounds: Any = (mins, maxs, keep, start)) -> Any:
            mins, maxs, keep, start = bounds
            last = (k.shape[2] - 1) // 16 * 16  # the one page a step summarises again
            kernels.page_meta(k[:, :, last:], 16, start)
            pages = kernels.page_select(q[:, :, 0], mins, maxs, policy.budget_pages, keep)
            return kernels.page_attention(q[:, :, 0], k, v, pages, 16, start, dim**-0.5)

        times: dict[str, list[float]] = {"dense": [], "paged": []}
        with torch.inference_mode():
            for fn in (dense, paged):
                fn()
            for _ in range(args.repeats):
                for name, fn in (("dense", dense), ("paged", paged)):
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
        d, p = statistics.median(times["dense"]), statistics.median(times["paged"])
        read = (1024 + n_pages) / length  # K+V of the kept tokens plus min+max per page, over K+V of all
        all_dense, all_paged = layers * d, dense_layers * d + (layers - dense_layers) * p
        out.append(
            dict(
                dtype=str(dtype).removeprefix("torch."),
                length=length,
                dense_ms=d * 1e3,
                paged_ms=p * 1e3,
                layer_x=d / p,
                read=read,
                all_dense_ms=all_dense * 1e3,
                all_paged_ms=all_paged * 1e3,
                all_x=all_dense / all_paged,
                all_read=(dense_layers + (layers - dense_layers) * read) / layers,
            )
        )
    return out


# -- (d) -------------------------------------------------------------------------------------
def kvpress(args: argparse.Namespace, decoder: Any) -> tuple[dict[str, Any] | None, list[str]]:
    python = ROOT / ".venv-kvpress" / "bin" / "python"
    if not python.exists():
        print("(d) skipped: run `bash benchmarks/setup_kvpress_env.sh` first", file=sys.stderr)
        return None, []
    from ragc.datasets import load_dataset
    from ragc.models import decoder_path

    spec = LongContextSpec(
        "needle-4096", task="needle", lengths=(4096,), depths=tuple(args.depths), per_cell=args.per_cell[0]
    )
    samples = spec.samples(load_dataset("squad-dev"), decoder.token_counter)[: args.press_n]
    path = args.work / "kvpress-samples.jsonl"
    system = decoder._prompts.system
    path.write_text(
        "".join(
            json.dumps(
                {
                    "id": s.id,
                    "context": s.context,
                    "question": s.question,
                    "answers": list(s.answers),
                    "system": system,
                    "passages": [{"text": p.text, "title": p.title} for p in s.passages],
                }
            )
            + "\n"
            for s in samples
        )
    )
    result = args.work / f"kvpress-{args.press_budget}.json"
    if not result.exists():
        cmd = [
            str(python),
            str(ROOT / "benchmarks" / "kvpress_needle.py"),
            "--samples",
            str(path),
            "--model-dir",
            decoder_path("qwen2.5-0.5b"),
            "--budget",
            str(args.press_budget),
            "--max-new-tokens",
            "16",
            "--presses",
            "none,snapkv,knorm,expected_attention,streaming_llm",
            "--out",
            str(result),
        ]
        subprocess.run(cmd, check=True)
    return json.loads(result.read_text()), [s.id for s in samples]


def same_samples(args: argparse.Namespace, ids: list[str]) -> dict[str, float]:
    """ragc's accuracy (%) under full attention and the press budget on the samples kvpress ran."""
    path = args.work / "needle-4096" / "predictions.jsonl"
    if not ids or not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = {}
    for label in ("full", f"budget {args.press_budget}"):
        got = [r["contained"] for r in rows if r["policy"] == label and r["sample"] in set(ids)]
        if got:
            out[label] = 100 * sum(got) / len(got)
    return out


# -- report ----------------------------------------------------------------------------------
def report(
    args: argparse.Namespace,
    dtype: str,
    needle_cells: list,
    speed: list,
    qa_cells: list,
    qa_lines: list,
    press: dict | None,
    ours: dict[str, float],
) -> str:
    lines = [
        "# KV page retrieval: needle, attention time and long-context QA (`page_retrieval`)",
        "",
        f"Command: `{command_line('python benchmarks/kv.py', sys.argv[1:])}`",
        "",
        f"Machine: {machine_info()}; CPU flags: {cpu_flags()}. Decoder qwen2.5-0.5b in {dtype}, greedy, "
        "16 new tokens; page 16, sink 16 + recent 16 tokens, layers 0-1 dense.",
        "",
        "## (a) Needle (pass key) accuracy, % of samples whose answer contains the key",
        "",
    ]
    labels = list(policies(args.budgets))
    lines += [
        "| context | n | " + " | ".join(labels) + " | KV read at 1024 |",
        "|---:|---:|" + "---:|" * len(labels) + "---:|",
    ]
    for length in args.lengths:
        cells = {c["policy"]: c for c in needle_cells if c["length"] == length}
        if not cells:
            continue
        row = [f"{length}", str(cells["full"]["n"]), *(f"{cells[label]['accuracy']:.0f}" for label in labels)]
        top = cells.get("budget 1024")
        row.append(f"{top['kv_read_fraction']:.1%}" if top else "")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## (b) Attention time of one decoding step (ms, median; torch path on this CPU)",
        "",
        "| dtype | cached tokens | dense layer | paged layer | layer speed-up | KV read | 24 layers dense | "
        "24 layers paged | all-layer speed-up | KV read, all |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in speed:
        lines.append(
            f"| {s['dtype']} | {s['length']} | {s['dense_ms']:.3f} | {s['paged_ms']:.3f} | "
            f"{s['layer_x']:.2f}x | "
            f"{s['read']:.1%} | {s['all_dense_ms']:.2f} | {s['all_paged_ms']:.2f} | {s['all_x']:.2f}x | "
            f"{s['all_read']:.1%} |"
        )
    lines += [
        "",
        f"## (c) Long-context QA: gold paragraph among {args.distractors} distractors, no retrieval",
        "",
        "| policy | n | prompt tokens | EM | F1 | decode tokens/s | KV tokens per step | KV read |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in qa_cells:
        per_step = (
            f"{c['kv_tokens_per_step']:.0f}" if c["kv_tokens_per_step"] else f"{c['prompt_tokens']:.0f}"
        )
        lines.append(
            f"| {c['policy']} | {c['n']} | {c['prompt_tokens']:.0f} | {c['em']:.1f} | {c['f1']:.1f} | "
            f"{c['decode_tokens_per_s']:.2f} | {per_step} | {c['kv_read_fraction']:.1%} |"
        )
    lines += [
        "",
        *qa_lines,
        "",
        f"## (d) kvpress presses at a {args.press_budget}-token KV budget, "
        f"the first {len(ours) and args.press_n} 4k needle samples",
        "",
    ]
    if press:
        lines += ["| method | when | accuracy |", "|---|---|---:|"]
        for label, acc in ours.items():
            lines.append(
                f"| ragc {label} | {'every decoding step, query-aware' if label != 'full' else 'full cache'} "
                f"| {acc:.0f} |"
            )
        for name, res in press["presses"].items():
            when = "none: full cache" if name == "none" else "once, after prefill (question not seen)"
            lines.append(f"| kvpress {name} | {when} | {100 * res['accuracy']:.0f} |")
        lines += [
            "",
            f"kvpress {press['kvpress']} with transformers {press['transformers']}, same prompt token ids "
            "as ragc; a press keeps exactly the budget of prefill KV pairs (system message and context), the "
            "question is appended after compression.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument(
        "--per-cell", type=int, nargs="+", default=[2, 1, 1], help="needle samples per depth, per length"
    )
    ap.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--budgets", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--speed-lengths", type=int, nargs="+", default=[8192, 16384, 32768])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--qa-n", type=int, default=20)
    ap.add_argument("--qa-budgets", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--distractors", type=int, default=30)
    ap.add_argument("--press-budget", type=int, default=512)
    ap.add_argument("--press-n", type=int, default=5)
    ap.add_argument("--parts", default="abcd")
    ap.add_argument("--work", type=Path, default=cache_dir() / "bench" / "kv")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kv.md")
    args = ap.parse_args()
    if len(args.per_cell) != len(args.lengths):
        ap.error("--per-cell takes one count per --lengths entry")
    args.work.mkdir(parents=True, exist_ok=True)
    from ragc.decoders.hf import HFDecoder

    decoder = HFDecoder(context_policy="error", **DECODER)
    dtype = decoder.lm.dtype
    import torch

    speed = attention_times(args, list(dict.fromkeys([dtype, torch.float32]))) if "b" in args.parts else []
    needle_cells = needle(args, decoder) if "a" in args.parts else []
    qa_cells, qa_lines = longqa(args, decoder) if "c" in args.parts else ([], [])
    press, ids = kvpress(args, decoder) if "d" in args.parts else (None, [])
    ours = same_samples(args, ids)
    args.out.write_text(
        report(args, str(dtype).removeprefix("torch."), needle_cells, speed, qa_cells, qa_lines, press, ours)
    )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
