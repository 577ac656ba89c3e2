"""CPU speed by component and precision, against the machine's measured matmul limit.

One run measures, side by side on this CPU:

1. the matmul limit: achieved GFLOP/s of fp32, bf16 and int8 (dynamic) matmuls at the
   shapes of the packaged models' Linear layers;
2. the MiniLM token classifier (``llmlingua2``) and sentence encoder (``sentences``): torch
   fp32 / bf16 / int8 in the compressors, and ONNX Runtime and OpenVINO fp32 / int8 on the
   same batches (bare forward; ``pip install 'ragc[cpu-runtimes]'``);
3. the decoder (qwen2.5-0.5b): prefill tokens/s and ms per decode step per precision;
4. decoder accuracy: open-domain SQuAD (hybrid retrieval, k=5) per precision against fp32
   (paired bootstrap), and the uncompressed-vs-``tiered``@0.33 TTFT ratio with the defaults.

    python benchmarks/cpu_speed.py            # writes benchmarks/results/cpu_speed.md

Evaluation runs go to ``runs/cpu_speed-n{N}-seed{S}/`` and resume when re-run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_runtimes import (
    TaggerModule,
    TaggerOnRuntime,
    Wrapped,
    export,
    prefill_module,
    runtimes_available,
    sentence_module,
)
from sentences_speed import inputs, kept

from ragc.compressors.llmlingua2 import LLMLingua2Compressor
from ragc.compressors.sentences import SentenceCompressor
from ragc.compressors.tagger import Tagger, load_tagger, token_probs, tokenize
from ragc.decoders.hf import HFDecoder
from ragc.device import Placement
from ragc.errors import InvalidArgumentError
from ragc.eval.report import command_line, cpu_flags, machine_info, paired_table
from ragc.eval.runner import EvalSpec, run_eval
from ragc.models import CAUSAL_LM_FP32, load_causal_lm, load_sentence_encoder, load_tokenizer
from ragc.quantize import Int8Linear
from ragc.text import word_spans
from ragc.tokens import TokenCounter

DECODER = "qwen2.5-0.5b"
RATE = 0.33
PRECISIONS = ("float32", "bfloat16", "int8")


def precisions() -> tuple[str, ...]:
    """The precisions timed per component: bf16 is left out under the AVX2 cap, where it runs
    emulated (the matmul limit shows how slow) and ``auto`` never picks it."""
    capped = os.environ.get("ATEN_CPU_CAPABILITY") == "avx2"
    return ("float32", "int8") if capped else PRECISIONS


warnings.filterwarnings("ignore", category=DeprecationWarning)


def best_seconds(f: Callable[[], Any], repeats: int) -> float:
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


# ------------------------------------------------------------------ 1. the matmul limit
SHAPES = ((4096, 384, 1536), (4096, 1536, 384), (1024, 896, 4864), (1024, 4864, 896))


def matmul_limits(repeats: int = 5) -> dict[str, float]:
    """Best achieved GFLOP/s per precision over the packaged models' Linear shapes: fp32 and
    bf16 ``torch.nn.Linear``, the bare int8 kernel ragc calls (fbgemm, weights pre-packed,
    activations quantised inside it) and ragc's whole ``Int8Linear`` (per-token scales too)."""
    import torch

    kinds = (*PRECISIONS[:2], "int8 kernel", "int8")
    out: dict[str, float] = {}
    with torch.inference_mode():
        for kind in kinds:
            best = 0.0
            for m, k, n in SHAPES:
                lin = torch.nn.Linear(k, n, bias=False)
                x = torch.randn(m, k)
                if kind == "bfloat16":
                    lin, x = lin.bfloat16(), x.bfloat16()
                elif kind == "int8":
                    lin = Int8Linear(lin)
                elif kind == "int8 kernel":
                    packed = Int8Linear(lin)._packed
                    x = x.abs().amax(-1, keepdim=True).reciprocal() * x  # rows in [-1, 1]
                    lin = lambda x, p=packed: torch.ops.quantized.linear_dynamic(x, p, False)  # noqa: E731
                s = best_seconds(lambda lin=lin, x=x: lin(x), repeats)
                best = max(best, 2 * m * k * n / s / 1e9)
            out[kind] = best
    return out


def limit_of(limits: dict[str, float], precision: str) -> float:
    """The machine's limit a forward in ``precision`` is measured against (int8: the bare kernel)."""
    return limits["int8 kernel" if precision == "int8" else precision]


def linear_macs(model: Any, skip: tuple[str, ...] = ()) -> int:
    """Multiply-adds per token of a model's Linear layers (quantised ones included)."""
    import torch

    total = 0
    for name, m in model.named_modules():
        if name.endswith(skip) and skip:
            continue
        if type(m) is torch.nn.Linear or isinstance(m, Int8Linear):
            total += m.in_features * m.out_features
    return total


# ------------------------------------------------------------------ measurement helpers
def top_n_same(ref: np.ndarray, other: np.ndarray, n: int) -> float:
    """Fraction of words on which 'among the n best' agrees between two score vectors."""
    a = np.zeros(len(ref), dtype=bool)
    b = np.zeros(len(ref), dtype=bool)
    a[np.argsort(-ref, kind="stable")[:n]] = True
    b[np.argsort(-other, kind="stable")[:n]] = True
    return float((a == b).mean()) if len(ref) else 1.0


def word_decisions(ctx: Any, passages: list[Any]) -> np.ndarray:
    """Per word of the passages (in order): was it kept (its first character in a kept span)?"""
    spans = {seg.passage_id: seg.spans for seg in ctx.segments}
    out = []
    for p in passages:
        starts = word_spans(p.passage.text)[:, 0]
        keep = np.zeros(len(starts), dtype=bool)
        for a, b in spans.get(p.passage.id, ()):
            keep |= (starts >= a) & (starts < b)
        out.append(keep)
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def word_scores(tagger: Tagger, texts: list[str]) -> list[np.ndarray]:
    from ragc.compressors.tagger import token_words, word_means

    ids, offs = tokenize(tagger.tokenizer, texts)
    probs = token_probs(tagger, ids, 512, 128, 16)
    out = []
    for text, off, p in zip(texts, offs, probs):
        spans = word_spans(text)
        first, last = token_words(off, spans)
        out.append(word_means(p, first, last, len(spans)))
    return out


def compressors(cls: Any, counter: TokenCounter) -> dict[str, Any]:
    """One bound, loaded compressor of ``cls`` per timed precision, at rate ``RATE``."""
    comps = {}
    for p in precisions():
        c = cls(budget=RATE, placement={"device": "cpu", "dtype": p})
        c.bind(counter)
        c.prepare()
        comps[p] = c
    return comps


# ------------------------------------------------------------------ sections
def token_classifier(jobs: list, limits: dict[str, float], args: argparse.Namespace, tmp: Path) -> list[str]:
    counter = TokenCounter(load_tokenizer(DECODER), DECODER)
    texts = [[p.passage.text for p in ps] for _, ps in jobs]
    ref_tagger = load_tagger("packaged", "cpu", "float32")
    n_tok = sum(len(x) for t in texts for x in tokenize(ref_tagger.tokenizer, t)[0])
    macs = linear_macs(ref_tagger.encoder)
    taggers: dict[str, Tagger] = {p: load_tagger("packaged", "cpu", p) for p in precisions()}
    for rt in runtimes_available():
        for int8 in (False, True):
            path = export(TaggerModule.of(ref_tagger), tmp / "tagger", int8)
            t = TaggerOnRuntime(ref_tagger.tokenizer, ref_tagger.encoder, ref_tagger.head, ref_tagger.meta)
            t.runner = Wrapped(rt, path, args.threads)  # type: ignore[attr-defined]
            taggers[f"{rt} {'int8' if int8 else 'float32'}"] = t
    comps = compressors(LLMLingua2Compressor, counter)
    auto = LLMLingua2Compressor(budget=RATE).where.dtype
    fwd = {k: 0.0 for k in taggers}
    e2e = {k: 0.0 for k in comps}
    same = {k: [] for k in taggers}
    jacc = {k: [] for k in comps}
    for (q, passages), tx in zip(jobs, texts):
        ref = None
        for k, tg in taggers.items():
            fwd[k] += best_seconds(
                lambda tg=tg, tx=tx: token_probs(tg, tokenize(tg.tokenizer, tx)[0], 512, 128, 16),
                args.repeats,
            )
            scores = np.concatenate(word_scores(tg, tx))
            ref = scores if ref is None else ref
            same[k].append(top_n_same(ref, scores, max(1, round(RATE * len(ref)))))
        base = None
        for k, c in comps.items():
            e2e[k] += best_seconds(lambda c=c, q=q, ps=passages: c.compress(q, ps), args.repeats)
            words = {w for seg in kept(c.compress(q, passages)) for w in seg[1]}
            base = words if base is None else base
            jacc[k].append(len(words & base) / max(1, len(words | base)))
    lines = [
        "## MiniLM token classifier (`llmlingua2`)",
        "",
        f"{len(jobs)} inputs x 5 passages, {n_tok / len(jobs):.0f} MiniLM tokens per input; windows of 512 "
        f"with 128 shared, 16 per forward (the compressor's). Best of {args.repeats} per input, all rows "
        f"interleaved per input. `auto` resolves to **{auto}** on this CPU.",
        "",
        "| runtime | precision | forward ms / 1k tokens | compressor ms / 1k tokens | speed-up vs "
        "torch fp32 | "
        "GFLOP/s (Linear) | of the matmul limit | top-n same decision | kept words Jaccard |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in taggers:
        rt, prec = k.split(" ") if " " in k else ("torch", k)
        limit = limit_of(limits, prec)
        gflops = 2 * macs * n_tok / fwd[k] / 1e9
        comp = f"{e2e[k] / n_tok * 1e6:.0f}" if k in e2e else "-"
        jac = f"{np.mean(jacc[k]):.3f}" if k in jacc else "-"
        lines.append(
            f"| {rt} | {prec} | {fwd[k] / n_tok * 1e6:.0f} | {comp} | {fwd['float32'] / fwd[k]:.2f}x | "
            f"{gflops:.0f} | {gflops / limit:.0%} | {np.mean(same[k]):.3f} | {jac} |"
        )
    lines += [
        "",
        "top-n same decision: per input, each side keeps its n = 0.33 x words best words by its own "
        "probabilities; the fraction of words with the same keep/drop decision as torch fp32. "
        "Kept words Jaccard: the compressor's kept words against the fp32 compressor's.",
        "",
    ]
    return lines


def sentence_encoder(jobs: list, limits: dict[str, float], args: argparse.Namespace, tmp: Path) -> list[str]:
    import torch

    counter = TokenCounter(load_tokenizer(DECODER), DECODER)
    comps = compressors(SentenceCompressor, counter)
    auto = SentenceCompressor(budget=RATE).where.dtype
    ms = {k: 0.0 for k in comps}
    same = dict.fromkeys(comps, 0)
    decided: dict[str, list[np.ndarray]] = {k: [] for k in comps}
    source = 0
    for q, passages in jobs:
        ref = None
        for k, c in comps.items():
            ms[k] += best_seconds(lambda c=c, q=q, ps=passages: c.compress(q, ps), args.repeats)
            ctx = c.compress(q, passages)
            got = kept(ctx)
            ref = got if ref is None else ref
            same[k] += got == ref
            decided[k].append(word_decisions(ctx, passages))
        source += comps["float32"].compress(q, passages).source_tokens
    # Bare forward of the encoder over all sentences of the inputs, per runtime.
    from ragc.text import split_sentences

    st = load_sentence_encoder("minilm", "cpu", "float32")
    sents = [p.passage.text[a:b] for _, ps in jobs for p in ps for a, b in split_sentences(p.passage.text)]
    tok = st.tokenizer(sents, padding=False, truncation=True, max_length=256)["input_ids"]
    order = np.argsort([len(x) for x in tok])
    batches = []
    for i in range(0, len(order), 8):
        rows = [tok[j] for j in order[i : i + 8]]
        width = max(len(r) for r in rows)
        ids = np.array([r + [0] * (width - len(r)) for r in rows], dtype=np.int64)
        batches.append((ids, (ids != 0).astype(np.int64)))
    n_tok = sum(len(x) for x in tok)
    mod = sentence_module(st)
    runners: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {}
    with torch.inference_mode():
        runners["torch float32"] = lambda i, m: mod(torch.from_numpy(i), torch.from_numpy(m)).numpy()
        if "bfloat16" in precisions():
            bf = sentence_module(load_sentence_encoder("minilm", "cpu", "bfloat16"))
            runners["torch bfloat16"] = lambda i, m: (
                bf(torch.from_numpy(i), torch.from_numpy(m)).float().numpy()
            )
        q8 = sentence_module(load_sentence_encoder("minilm", "cpu", "int8"))
        runners["torch int8"] = lambda i, m: q8(torch.from_numpy(i), torch.from_numpy(m)).numpy()
        for rt in runtimes_available():
            for int8 in (False, True):
                runners[f"{rt} {'int8' if int8 else 'float32'}"] = Wrapped(
                    rt, export(mod, tmp / "sentence", int8), args.threads
                ).run
        secs = {
            k: best_seconds(lambda r=r: [r(i, m) for i, m in batches], args.repeats)
            for k, r in runners.items()
        }
        ref = np.concatenate([runners["torch float32"](i, m) for i, m in batches])
        cos = {
            k: float(np.min(np.sum(ref * np.concatenate([r(i, m) for i, m in batches]), axis=1)))
            for k, r in runners.items()
        }
    macs = linear_macs(st)
    lines = [
        "## MiniLM sentence encoder (`sentences`)",
        "",
        f"Compressor: {len(jobs)} inputs x 5 passages ({source / len(jobs):.0f} {DECODER} tokens per input), "
        f"rate {RATE}, batch size 8, best of {args.repeats} per input, interleaved. `auto` resolves to "
        f"**{auto}** on this CPU. Before this change the compressor ran fp32 by default.",
        "",
        "| precision | compressor ms / 1k tokens | speed-up vs fp32 (the old default) | same "
        "sentences kept | kept-word same decision | kept words Jaccard |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for k in comps:
        a, b = np.concatenate(decided["float32"]), np.concatenate(decided[k])
        lines.append(
            f"| {k} | {ms[k] / source * 1e6:.0f} | {ms['float32'] / ms[k]:.2f}x | {same[k]}/{len(jobs)} | "
            f"{(a == b).mean():.3f} | {(a & b).sum() / max(1, (a | b).sum()):.3f} |"
        )
    lines += [
        "",
        f"Bare forward over the inputs' {len(sents)} sentences ({n_tok / len(sents):.0f} MiniLM tokens each, "
        "8 per batch sorted by length, as the compressor batches them):",
        "",
        "| runtime | precision | ms / 1k tokens | speed-up vs torch fp32 | GFLOP/s (Linear) | of "
        "the matmul limit | "
        "min cosine vs fp32 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for k, s in secs.items():
        rt, prec = k.split(" ")
        g = 2 * macs * n_tok / s / 1e9
        lines.append(
            f"| {rt} | {prec} | {s / n_tok * 1e6:.0f} | {secs['torch float32'] / s:.2f}x | {g:.0f} | "
            f"{g / limit_of(limits, prec):.0%} | {cos[k]:.4f} |"
        )
    return [*lines, ""]


def weight_bytes(model: Any) -> int:
    """Bytes of Linear weights one decode step reads (int8 layers: one byte per weight)."""
    import torch

    total = 0
    for m in model.modules():
        if isinstance(m, Int8Linear):
            total += m.in_features * m.out_features
        elif type(m) is torch.nn.Linear:
            total += m.weight.numel() * m.weight.element_size()
    return total


def memory_bandwidth(repeats: int = 5) -> float:
    """Achieved read bandwidth in GB/s: a sum over 512 MB of fp32 (the decode step's limit)."""
    import torch

    x = torch.ones(128 * 2**20)
    return x.numel() * 4 / best_seconds(lambda: x.sum(), repeats) / 1e9


def runtime_prefill(prompts: list, ref: Any, args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """``{"onnxruntime float32": (seconds over the prompts, top-1 agreement with torch fp32)}``:
    the prefill (no KV cache returned) exported once to ``$RAGC_CACHE/bench/<decoder>-prefill``."""
    import torch

    from ragc.paths import cache_dir

    out: dict[str, tuple[float, float]] = {}
    if not runtimes_available():
        return out
    folder = cache_dir() / "bench" / f"{DECODER}-prefill"  # its own folder: ONNX writes the
    folder.mkdir(parents=True, exist_ok=True)  # weights beside the graph, one file per tensor
    module = prefill_module(ref)
    with torch.inference_mode():
        want = [int(module(ids, torch.ones_like(ids)).argmax(-1)) for ids in prompts]
    for rt in runtimes_available():
        for int8 in (False, True):
            run = Wrapped(rt, export(module, folder / "prefill", int8), args.threads).run
            feeds = [(ids.numpy(), np.ones_like(ids.numpy())) for ids in prompts]
            secs = sum(best_seconds(lambda f=f, run=run: run(*f), args.repeats) for f in feeds)
            top = np.mean([int(np.asarray(run(*f)).argmax(-1)[0]) == w for f, w in zip(feeds, want)])
            out[f"{rt} {'int8' if int8 else 'float32'}"] = (secs, float(top))
    return out


def decoder_speed(jobs: list, limits: dict[str, float], args: argparse.Namespace) -> list[str]:
    import torch

    from ragc.decoders.generate import cache_argument, output_cache

    tok = load_tokenizer(DECODER)
    prompts = []
    for q, passages in jobs[: args.prompts]:
        text = "\n\n".join(p.passage.text for p in passages) + f"\n\nQuestion: {q}\nAnswer:"
        prompts.append(torch.tensor([tok(text)["input_ids"]]))
    models = {p: load_causal_lm(DECODER, "cpu", p) for p in precisions()}
    macs = linear_macs(models["float32"], skip=("lm_head",))
    pre = {p: 0.0 for p in models}
    step = {p: [] for p in models}
    n_tok = sum(int(x.shape[1]) for x in prompts)
    with torch.inference_mode():
        for ids in prompts:
            for p, lm in models.items():
                pre[p] += best_seconds(
                    lambda lm=lm, ids=ids: lm(ids, use_cache=True, logits_to_keep=1), args.repeats
                )
                out = lm(ids, use_cache=True, logits_to_keep=1)
                cache, nxt, arg = output_cache(out), out.logits[:, -1:].argmax(-1), cache_argument(lm)
                times = []
                for _ in range(args.decode_steps):
                    t = time.perf_counter()
                    o = lm(nxt, **{arg: cache}, use_cache=True)
                    times.append(time.perf_counter() - t)
                    cache, nxt = output_cache(o), o.logits[:, -1:].argmax(-1)
                step[p].append(statistics.median(times))
    others = runtime_prefill(prompts, models["float32"], args)
    bandwidth = memory_bandwidth()
    fp32_layers = " and ".join(CAUSAL_LM_FP32) or "none"
    lines = [
        f"## Decoder ({DECODER})",
        "",
        f"{len(prompts)} prompts of 5 passages + question ({n_tok / len(prompts):.0f} tokens each); "
        f"prefill best of {args.repeats}; decode: median of {args.decode_steps} greedy steps after the "
        f"prefill. Precisions interleaved per prompt. int8 keeps these Linear layers in fp32: "
        f"{fp32_layers} (`ragc.models.CAUSAL_LM_FP32`). Measured read bandwidth: {bandwidth:.0f} GB/s "
        "(a sum over 512 MB), the limit of a decode step, which reads every weight once.",
        "",
        "| runtime | precision | prefill tokens/s | speed-up vs fp32 | prefill GFLOP/s (Linear) | of the "
        "matmul limit | ms per decode step | speed-up vs fp32 | weights read per step | of the "
        "bandwidth |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    d0 = statistics.mean(step["float32"]) * 1000
    for p, lm in models.items():
        tps = n_tok / pre[p]
        g = 2 * macs * tps / 1e9
        d = statistics.mean(step[p]) * 1000
        mb = weight_bytes(lm) / 1e6
        lines.append(
            f"| torch | {p} | {tps:.0f} | {pre['float32'] / pre[p]:.2f}x | {g:.0f} | "
            f"{g / limit_of(limits, p):.0%} | {d:.1f} | {d0 / d:.2f}x | {mb:.0f} MB | "
            f"{mb / d / bandwidth:.0%} |"
        )
    for k, (secs, _) in others.items():
        rt, p = k.split(" ")
        tps = n_tok / secs
        g = 2 * macs * tps / 1e9
        lines.append(
            f"| {rt} | {p} | {tps:.0f} | {pre['float32'] / secs:.2f}x | {g:.0f} | "
            f"{g / limit_of(limits, p):.0%} | - | - | - | - |"
        )
    if others:
        lines += [
            "",
            "ONNX Runtime and OpenVINO run the exported prefill (`(ids, mask) -> last logits`, no KV "
            "cache out), so they have no decode-step figure; their next token equals torch fp32's on "
            + ", ".join(f"{k} {top:.0%}" for k, (_, top) in others.items())
            + " of the prompts.",
        ]
    return [*lines, ""]


def decoder_accuracy(args: argparse.Namespace) -> tuple[list[str], Path]:
    capped = args.isa == "avx2"
    n = args.avx2_eval_n if capped else args.eval_n
    runs = Path(args.runs) / f"cpu_speed{'-avx2' if capped else ''}-n{n}-seed{args.seed}"

    def spec(name: str, decoder: dict[str, Any], compressor: dict[str, Any], **more: Any) -> EvalSpec:
        config = {"retriever": {"name": "hybrid"}, "compressor": compressor, "decoder": decoder, "k": 5}
        return EvalSpec(name, {**config, **more}, "squad-dev", n, args.seed)

    none, tiered = {"name": "none"}, {"name": "tiered", "budget": RATE}
    precisions = () if capped else ("float32", "int8")  # the precision pairs once, uncapped
    specs = [
        *(
            spec(f"decoder-{p}", {"name": "hf", "model": DECODER, "placement": {"dtype": p}}, none)
            for p in precisions
        ),
        spec("defaults-uncompressed", {"name": "hf", "model": DECODER}, none),
        spec("defaults-tiered", {"name": "hf", "model": DECODER}, tiered),
    ]
    if not capped:  # the whole tiered pipeline (both encoders and the decoder) in fp32
        fp32 = {"dtype": "float32"}
        specs.append(spec("float32-tiered", {"name": "hf", "model": DECODER}, tiered, placement=fp32))
    summaries = {s.name: run_eval(s, runs / s.name) for s in specs}
    auto = Placement().resolve(HFDecoder.int8).dtype
    lines = [
        "## Decoder accuracy and time to first token",
        "",
        f"Open-domain SQuAD v1.1 dev, {n} questions (seed {args.seed}), hybrid retrieval, k=5, "
        f"{DECODER} greedy. `defaults-*` runs leave every placement open: the decoder's `auto` resolves "
        f"to **{auto}** on this CPU.",
        "",
        "| run | EM | F1 | mean TTFT s | mean prefill s | prompt tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in summaries.items():
        lines.append(
            f"| {name} | {s.em:.1f} | {s.f1:.1f} | {s.mean_ttft:.2f} | {s.mean_prefill:.2f} | "
            f"{s.mean_prompt_tokens:.0f} |"
        )
    u, t = summaries["defaults-uncompressed"], summaries["defaults-tiered"]
    lines += [
        "",
        f"Uncompressed vs `tiered`@{RATE} with the defaults: TTFT {u.mean_ttft:.2f} s vs "
        f"{t.mean_ttft:.2f} s, "
        f"ratio **{u.mean_ttft / t.mean_ttft:.2f}x** (F1 {u.f1:.1f} vs {t.f1:.1f}).",
        "",
    ]
    pairs = [
        (run, base, m)
        for run, base in (
            ("decoder-int8", "decoder-float32"),
            ("defaults-uncompressed", "decoder-float32"),
            ("defaults-tiered", "float32-tiered"),
        )
        for m in ("f1", "em")
    ]
    if not capped:
        lines += paired_table(pairs, runs, "Precision against fp32 (paired)")
    return lines, runs


#: Environment that caps torch (its own kernels, MKL, oneDNN and fbgemm) to AVX2 on a CPU that
#: has more, and makes ``auto`` decide as on a CPU without fast bf16. ONNX Runtime and OpenVINO
#: have no such switch, so the capped pass leaves them out.
AVX2_CAPS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "RAGC_FAST_BF16": "0",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=12, help="compressor inputs (questions with 5 passages)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4, help="decoder prompts timed")
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--eval-n", type=int, default=200, help="SQuAD questions for decoder accuracy (0: skip)")
    ap.add_argument(
        "--avx2-eval-n", type=int, default=50, help="questions for the TTFT ratio under the AVX2 cap"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--isa",
        choices=("both", "native", "avx2"),
        default="both",
        help="this CPU as it is, torch capped to AVX2 (see AVX2_CAPS), or both in turn",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--out", default="benchmarks/results/cpu_speed.md")
    args = ap.parse_args(argv)
    if (
        min(args.n, args.repeats, args.prompts, args.decode_steps, args.threads) < 1
        or min(args.eval_n, args.avx2_eval_n) < 0
    ):
        raise InvalidArgumentError("--n, --repeats, --prompts, --decode-steps and --threads must be >= 1.")
    return args


def measure(args: argparse.Namespace) -> list[str]:
    """The sections of one pass (``args.isa`` is ``native`` or ``avx2``, its caps in effect)."""
    import torch

    torch.set_num_threads(args.threads)
    capped = args.isa == "avx2"
    jobs = inputs(args.n, args.seed)
    limits = matmul_limits()
    lines = [
        f"# Pass: {'torch capped to AVX2' if capped else 'this CPU as it is'}",
        "",
        (
            "Environment: "
            + ", ".join(f"`{k}={v}`" for k, v in AVX2_CAPS.items())
            + ": torch's kernels, MKL, "
            "oneDNN and fbgemm use AVX2 only and `auto` decides as on a CPU without fast bf16. Clock, caches "
            "and memory stay this machine's, so this approximates (does not replace) an AVX2-only host. "
            "ONNX Runtime and OpenVINO have no such cap: their rows are in the other pass only."
            if capped
            else f"torch capability `{torch.backends.cpu.get_cpu_capability()}`; all runtimes use all of it."
        ),
        "",
        "## Matmul limit (achieved)",
        "",
        "| precision | best GFLOP/s |",
        "|---|---:|",
        *(f"| {p} | {g:.0f} |" for p, g in limits.items()),
        "",
        f"Best of 5 over the Linear shapes {', '.join(f'{m}x{k}x{n}' for m, k, n in SHAPES)} "
        "(tokens x in x out); int8 is torch's dynamic int8 Linear (activation quantisation "
        "included). Each forward's fraction of the limit below counts Linear multiply-adds only.",
        "",
    ]
    with tempfile.TemporaryDirectory() as d:
        lines += token_classifier(jobs, limits, args, Path(d))
        lines += sentence_encoder(jobs, limits, args, Path(d))
    lines += decoder_speed(jobs, limits, args)
    if args.avx2_eval_n if capped else args.eval_n:
        lines += decoder_accuracy(args)[0]
    return lines


def run_pass(isa: str, argv: list[str], out: Path) -> None:
    """Run one pass in a fresh process (the caps must be set before torch loads)."""
    env = {**os.environ, **(AVX2_CAPS if isa == "avx2" else {}), "CPU_SPEED_CHILD": "1"}
    cmd = [sys.executable, __file__, *argv, "--isa", isa, "--out", str(out)]
    subprocess.run(cmd, env=env, check=True)


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse_args(given)
    if args.isa == "avx2" and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
        run_pass("avx2", [a for a in given if not a.startswith("--isa")], Path(args.out))
        return 0
    if args.isa != "both":
        body = measure(args)
    else:
        rest = [
            a
            for i, a in enumerate(given)
            if not a.startswith(("--isa", "--out")) and not (i and given[i - 1] in ("--isa", "--out"))
        ]
        body = []
        with tempfile.TemporaryDirectory() as d:
            for isa in ("native", "avx2"):
                run_pass(isa, rest, Path(d) / f"{isa}.md")
                part = (Path(d) / f"{isa}.md").read_text(encoding="utf-8").split("\n")
                body += part[part.index("<!-- pass -->") + 1 :]
    lines = [
        "# CPU speed by component and precision",
        "",
        f"Command: `{command_line('python benchmarks/cpu_speed.py', given)}`",
        "",
        f"Machine: {machine_info()}  ",
        f"CPU flags: **{cpu_flags()}**; threads {args.threads} (torch, ONNX Runtime and OpenVINO alike).",
        "",
        "<!-- pass -->",
        *body,
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    if not os.environ.get("CPU_SPEED_CHILD"):
        print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
