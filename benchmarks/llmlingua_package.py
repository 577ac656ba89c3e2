"""ragc's ``llmlingua2`` vs the ``llmlingua`` package's LLMLingua-2, same encoder weights, same inputs.

Usage (from the repository root, in the benchmark venv; nothing is downloaded)::

    bash benchmarks/setup_llmlingua_env.sh     # once: makes the venv
    HF_HUB_OFFLINE=1 "${LLMLINGUA_VENV:-.venv-llmlingua}/bin/python" \\
        benchmarks/llmlingua_package.py [--n 20] [--repeats 3] [--out PATH.md]

The venv is ``.venv-llmlingua`` in the repository root (beside ``.venv``) unless the
environment variable ``LLMLINGUA_VENV`` names another folder; the setup script and this
one read the same variable.

Our student (packaged MiniLM + keep head) is exported as a 2-label ``BertForTokenClassification``
folder whose class-1 probability equals our sigmoid (checked before use) under
``$RAGC_CACHE/bench/bert-base-multilingual-cased-ragc-minilm``: llmlingua picks its word-merging
rule from the model name, and MiniLM's WordPiece ``##`` convention is mBERT's. One process then
runs ``llmlingua.PromptCompressor(<folder>, use_llmlingua2=True, device_map="cpu")`` and ragc's
``llmlingua2`` (dtype ``auto``: bf16 with AMX, else int8; and ``float32``, ``int8``) on the
same inputs (5 gold SQuAD dev paragraphs of distinct questions each, seeded, ~800 MiniLM
tokens). It times each whole compress call (wall clock, per-input median of ``--repeats``
after a warm-up) and the bare encoder + head forward on the windows each library fed its
model (recorded with forward hooks), and reports (a) correlations of per-word keep
probabilities, (b) keep/drop agreement at equal word counts and (c) the overlap of kept words
under each library's own rate rule; the written report explains the word alignment.
Writes ``--out`` (default ``benchmarks/results/llmlingua_package.md``) and prints it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragc.compressors import tagger as l2
from ragc.compressors.llmlingua2 import WINDOWS, LLMLingua2Compressor
from ragc.compressors.tagger import Tagger
from ragc.compressors.token_scoring import Windows, Words
from ragc.datasets import load_dataset
from ragc.errors import InvalidArgumentError
from ragc.eval.report import command_line, cpu_flags, machine_info
from ragc.models import load_tokenizer
from ragc.paths import cache_dir
from ragc.text import word_spans
from ragc.tokens import TokenCounter
from ragc.types import Scored, TextSegment

VENV = os.environ.get("LLMLINGUA_VENV") or ".venv-llmlingua"  # setup_llmlingua_env.sh makes it
EXPORT_NAME = "bert-base-multilingual-cased-ragc-minilm"  # llmlingua reads the merge rule from it
CL100K = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"  # tiktoken's cache file name for cl100k_base
PER_INPUT = 5
WORD_SEP, LABEL_SEP = "\x1e", "\x1f"  # separators no passage text contains
CHECK_TEXT = "Super Bowl 50 was played on February 7, 2016, at Levi's Stadium in Santa Clara."


# ---------------------------------------------------------------- setup


def export_token_classifier(tagger: Tagger, out_dir: Path) -> Path:
    """Write ``tagger`` (fp32) as a 2-label ``BertForTokenClassification`` folder + tokenizer.

    Class 1 (keep) gets our head's row, class 0 a zero row, so
    ``softmax(logits)[..., 1] == sigmoid(our keep logit)``.
    """
    import copy

    import torch
    from transformers import BertForTokenClassification

    if int(tagger.meta["num_labels"]) != 1:
        raise InvalidArgumentError("export_token_classifier expects a 1-logit (sigmoid) keep head.")
    config = copy.deepcopy(tagger.encoder.config)
    config.num_labels = 2
    config.id2label, config.label2id = {0: "drop", 1: "keep"}, {"drop": 0, "keep": 1}
    config.architectures = ["BertForTokenClassification"]
    model = BertForTokenClassification(config).eval()
    model.bert.load_state_dict({k: v.float() for k, v in tagger.encoder.state_dict().items()})
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[1] = tagger.head.weight[0].float()
        model.classifier.bias[1] = tagger.head.bias[0].float()
    model.save_pretrained(out_dir)
    tagger.tokenizer.save_pretrained(out_dir)
    return out_dir


def export_error(tagger: Tagger, folder: Path) -> float:
    """Max |exported softmax[..., 1] - our sigmoid| (both fp32) on a sentence."""
    import torch
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(folder, dtype=torch.float32).eval()
    enc = tagger.tokenizer(CHECK_TEXT, return_tensors="pt")
    with torch.inference_mode():
        theirs = model(**enc).logits.softmax(-1)[0, :, 1]
        ours = torch.sigmoid(tagger.keep_logits(enc["input_ids"], enc["attention_mask"]))[0]
    return float((theirs - ours).abs().max())


def prompt_compressor(folder: Path) -> Any:
    """llmlingua's LLMLingua-2 compressor on ``folder``, tiktoken served from the venv's cache."""
    cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or Path(sys.prefix) / "share" / "tiktoken_cache")
    if not (cache / CL100K).is_file():
        raise SystemExit(
            f"{cache} has no tiktoken cl100k_base file ({CL100K}); llmlingua would download it. "
            "Run benchmarks/setup_llmlingua_env.sh and use its venv, or set TIKTOKEN_CACHE_DIR."
        )
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        from llmlingua import PromptCompressor
    except ImportError as e:
        raise SystemExit(
            f"llmlingua is not installed here ({e}): run benchmarks/setup_llmlingua_env.sh and use "
            f"{VENV}/bin/python."
        ) from e
    return PromptCompressor(model_name=str(folder), use_llmlingua2=True, device_map="cpu")


def load_inputs(n: int, seed: int) -> list[list[Scored]]:
    """``n`` inputs of 5 distinct gold SQuAD dev paragraphs (questions in seeded order)."""
    data = load_dataset("squad-dev")
    by_id = data.passage_index()
    order = random.Random(seed).sample(range(len(data.examples)), len(data.examples))
    ids = list(dict.fromkeys(data.examples[i].gold_passage_id for i in order))[: n * PER_INPUT]
    if len(ids) < n * PER_INPUT:
        raise SystemExit(f"SQuAD dev has only {len(ids)} paragraphs; lower --n.")
    groups = [ids[i : i + PER_INPUT] for i in range(0, len(ids), PER_INPUT)]
    return [[Scored(by_id[pid], 1.0, r) for r, pid in enumerate(g)] for g in groups]


@contextmanager
def recorded_forwards(module: Any) -> Iterator[list[dict[str, Any]]]:
    """Keyword inputs (and ``out``) of every forward of ``module`` while inside; unhooks on exit."""
    calls: list[dict[str, Any]] = []
    handle = module.register_forward_hook(
        lambda _m, _args, kwargs, out: calls.append({**kwargs, "out": out}), with_kwargs=True
    )
    try:
        yield calls
    finally:
        handle.remove()


# ---------------------------------------------------------------- one input, both libraries


@dataclass
class OurRun:
    probs: np.ndarray  # keep probability per ragc word (all passages of the input)
    kept: np.ndarray  # kept mask per ragc word at --rate
    rate: float  # achieved, in decoder tokens
    windows: list[tuple[Any, Any]]  # (ids, mask) fed to the encoder


@dataclass
class TheirRun:
    tokens: list[str]  # non-special tokens, in order
    token_probs: list[float]
    word_sizes: list[int]  # tokens per llmlingua word
    word_probs: list[float]
    kept: list[int]  # llmlingua's labels at --rate
    rate: float  # achieved, in cl100k tokens
    windows: list[tuple[Any, Any]]


@dataclass
class Observed:
    """One input, both libraries (untimed pass)."""

    ours: dict[str, OurRun]  # by dtype
    theirs: TheirRun
    their_word: np.ndarray  # ragc word index of each llmlingua word (-1: none)
    token_gap: float  # max |llmlingua token prob - our fp32 token prob|
    tokens: int  # MiniLM tokens of the input


def kept_mask(spans: np.ndarray, runs: tuple[tuple[int, int], ...]) -> np.ndarray:
    keep = np.zeros(len(spans), dtype=bool)
    for a, b in runs:
        keep |= (spans[:, 0] >= a) & (spans[:, 1] <= b)
    return keep


def run_ours(comp: LLMLingua2Compressor, passages: list[Scored], rate: float) -> OurRun:
    texts = [s.passage.text for s in passages]
    words = [Words(t, word_spans(t), np.zeros(0, dtype=np.int64)) for t in texts]
    with recorded_forwards(comp.tagger().encoder) as calls:
        probs = np.concatenate(comp.score_words(None, passages, words))
    out = comp.compress(None, passages, rate)
    runs = {seg.passage_id: seg.spans for seg in out.segments if isinstance(seg, TextSegment)}
    kept = np.concatenate([kept_mask(w.spans, runs.get(s.passage.id, ())) for s, w in zip(passages, words)])
    return OurRun(probs, kept, out.rate, [(c["input_ids"], c["attention_mask"]) for c in calls])


def run_theirs(pc: Any, texts: list[str], rate: float) -> TheirRun:
    with recorded_forwards(pc.model) as calls:
        res = pc.compress_prompt(texts, rate=rate, use_context_level_filter=False, return_word_label=True,
                                 word_sep=WORD_SEP, label_sep=LABEL_SEP)
    merge = pc._PromptCompressor__merge_token_to_word  # llmlingua's own word merging
    run = TheirRun([], [], [], [], [], res["compressed_tokens"] / max(res["origin_tokens"], 1),
                   [(c["input_ids"], c["attention_mask"]) for c in calls])
    for c in calls:
        p = c["out"].logits.float().softmax(-1)[..., 1]
        for ids, mask, row in zip(c["input_ids"], c["attention_mask"], p):
            toks = pc.tokenizer.convert_ids_to_tokens(ids[mask.bool()].tolist())
            row_probs = row[mask.bool()].tolist()
            _, per_word, _ = merge(toks, row_probs, force_tokens=[], token_map={}, force_reserve_digit=False)
            kept = [(t, q) for t, q in zip(toks, row_probs) if t not in pc.special_tokens]
            run.tokens += [t for t, _ in kept]
            run.token_probs += [q for _, q in kept]
            run.word_sizes += [len(w) for w in per_word]
            run.word_probs += [sum(w) / len(w) for w in per_word]
    run.kept = [int(x.rsplit(LABEL_SEP, 1)[1]) for x in res["fn_labeled_original_prompt"].split(WORD_SEP)]
    if len(run.kept) != len(run.word_sizes):
        raise RuntimeError(f"llmlingua labelled {len(run.kept)} words but scored {len(run.word_sizes)}.")
    return run


def observe(pc: Any, comps: dict[str, LLMLingua2Compressor], passages: list[Scored], rate: float) -> Observed:
    """Run both libraries on one input and map llmlingua's words onto ragc's (module doc)."""
    texts = [s.passage.text for s in passages]
    ours = {k: run_ours(c, passages, rate) for k, c in comps.items()}
    theirs = run_theirs(pc, texts, rate)
    c32 = comps["float32"]
    tok = c32.tagger().tokenizer
    ids, offs = l2.tokenize(tok, texts)
    win = Windows.parse(c32.windows, WINDOWS)
    width = min(win.tokens, int(c32.tagger().meta["max_length"]))  # as score_words
    p32 = l2.token_probs(c32.tagger(), ids, width, win.overlap, win.batch_size)
    # every MiniLM token but [UNK] (llmlingua skips it): (passage, first char, id, fp32 prob)
    flat = [(k, int(o[0]), int(i), float(q)) for k, (ii, oo, pp) in enumerate(zip(ids, offs, p32))
            for i, o, q in zip(ii, oo, pp) if i != tok.unk_token_id]
    if tok.convert_tokens_to_ids(theirs.tokens) != [f[2] for f in flat]:
        raise RuntimeError("llmlingua's token stream differs from the MiniLM tokenisation of the passages.")
    spans = [word_spans(t) for t in texts]
    word_base = np.cumsum([0] + [len(s) for s in spans])
    their_word = np.full(len(theirs.word_sizes), -1, dtype=np.int64)
    for w, t in enumerate(np.cumsum([0, *theirs.word_sizes[:-1]])):  # each word's first token
        k, char = flat[t][0], flat[t][1]
        j = int(np.searchsorted(spans[k][:, 0], char, side="right")) - 1
        if j >= 0 and char < spans[k][j, 1]:
            their_word[w] = word_base[k] + j
    gap = float(np.abs(np.array(theirs.token_probs) - np.array([f[3] for f in flat])).max())
    return Observed(ours, theirs, their_word, gap, len(flat))


# ---------------------------------------------------------------- agreement


def agreement(obs: list[Observed], dtype: str) -> dict[str, float]:
    """(a) correlations, (b) top-n agreement, (c) own-rate Jaccard, pooled over inputs."""
    from scipy.stats import pearsonr, spearmanr

    ours_all, theirs_all = [], []
    same = total = inter_n = union_n = inter_c = union_c = 0
    for o in obs:
        mine_all, their_probs = o.ours[dtype].probs, np.array(o.theirs.word_probs)
        n_words, ok = len(mine_all), o.their_word >= 0
        sums = np.bincount(o.their_word[ok], weights=their_probs[ok], minlength=n_words)
        counts = np.bincount(o.their_word[ok], minlength=n_words)
        valid = counts > 0
        mine, theirs = mine_all[valid], sums[valid] / counts[valid]
        ours_all.append(mine)
        theirs_all.append(theirs)
        n = int(o.ours["auto"].kept[valid].sum())
        a = np.zeros(len(mine), dtype=bool)
        b = np.zeros(len(mine), dtype=bool)
        a[np.argsort(-mine, kind="stable")[:n]] = True
        b[np.argsort(-theirs, kind="stable")[:n]] = True
        same, total = same + int((a == b).sum()), total + len(a)
        inter_n, union_n = inter_n + int((a & b).sum()), union_n + int((a | b).sum())
        mine_c = np.where(ok, o.ours[dtype].kept[np.maximum(o.their_word, 0)], False)
        their_c = np.array(o.theirs.kept, dtype=bool)
        inter_c += int((mine_c & their_c).sum())
        union_c += int((mine_c | their_c).sum())
    x, y = np.concatenate(ours_all), np.concatenate(theirs_all)
    return {
        "spearman": float(spearmanr(x, y).statistic), "pearson": float(pearsonr(x, y).statistic),
        "topn_agree": same / max(total, 1), "topn_jaccard": inter_n / max(union_n, 1),
        "rate_jaccard": inter_c / max(union_c, 1), "words": float(total),
    }


# ---------------------------------------------------------------- timing


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward(call: Callable[[Any, Any], Any], windows: list[tuple[Any, Any]]) -> Callable[[], None]:
    import torch

    def run() -> None:
        with torch.inference_mode():
            for ids, mask in windows:
                call(ids, mask)

    return run


def timings(pc: Any, comps: dict[str, LLMLingua2Compressor], bf16: Tagger, inputs: list[list[Scored]],
            obs: list[Observed], rate: float, repeats: int) -> dict[str, list[float]]:
    """Seconds per input (median of ``repeats``) of every timed call, after a warm-up."""
    fp32, int8 = comps["float32"].tagger(), comps["int8"].tagger()
    model = pc.model

    def theirs(ids: Any, mask: Any) -> Any:
        return model(input_ids=ids, attention_mask=mask)

    def calls(passages: list[Scored], o: Observed) -> dict[str, Callable[[], object]]:
        texts = [s.passage.text for s in passages]
        return {
            "llmlingua": lambda: pc.compress_prompt(texts, rate=rate, use_context_level_filter=False),
            "llmlingua default": lambda: pc.compress_prompt(texts, rate=rate),
            "ragc auto": lambda: comps["auto"].compress(None, passages, rate),
            "ragc float32": lambda: comps["float32"].compress(None, passages, rate),
            "ragc int8": lambda: comps["int8"].compress(None, passages, rate),
            "fwd llmlingua fp32": forward(theirs, o.theirs.windows),
            "fwd ragc fp32": forward(fp32.keep_logits, o.ours["auto"].windows),
            "fwd ragc bf16": forward(bf16.keep_logits, o.ours["auto"].windows),
            "fwd ragc int8": forward(int8.keep_logits, o.ours["auto"].windows),
        }

    for passages, o in list(zip(inputs, obs))[:2]:  # warm-up
        for fn in calls(passages, o).values():
            fn()
    out: dict[str, list[float]] = {}
    for passages, o in zip(inputs, obs):  # interleaved, so drifting load hits every row alike
        for name, fn in calls(passages, o).items():
            out.setdefault(name, []).append(median_time(fn, repeats))
    return out


# ---------------------------------------------------------------- report


def speed_section(t: dict[str, list[float]], info: dict[str, Any]) -> list[str]:
    ms = {k: (1e3 * statistics.median(v), 1e3 * statistics.mean(v)) for k, v in t.items()}
    base = ms["llmlingua"][0]
    auto_fwd = {"bfloat16": "fwd ragc bf16", "int8": "fwd ragc int8"}.get(info["auto_dtype"], "fwd ragc fp32")
    rows = [("llmlingua", "llmlingua 0.2.2, token level", "float32", "fwd llmlingua fp32"),
            ("llmlingua default", "llmlingua 0.2.2, defaults (+ passage filter)", "float32", ""),
            ("ragc auto", "ragc `llmlingua2` (default)", info["auto_dtype"], auto_fwd),
            ("ragc float32", "ragc `llmlingua2` `placement: {dtype: float32}`", "float32", "fwd ragc fp32"),
            ("ragc int8", "ragc `llmlingua2` `placement: {dtype: int8}`", "int8", "fwd ragc int8")]
    lines = ["| run | dtype | compress ms (median) | mean | speed-up vs llmlingua | forward ms, same windows "
             "| compress / forward |", "|---|---|---:|---:|---:|---:|---:|"]
    for key, label, dtype, fwd in rows:
        med, mean = ms[key]
        fwd_cells = f"{ms[fwd][0]:.1f} ({fwd[4:]}) | {med / ms[fwd][0]:.2f}" if fwd else "- | -"
        lines.append(f"| {label} | {dtype} | {med:.1f} | {mean:.1f} | {base / med:.2f}x | {fwd_cells} |")
    speedup = base / ms["ragc auto"][0]
    return [*lines, "",
            f"ragc default vs llmlingua (token level), median: **{speedup:.2f}x** faster "
            f"({'meets' if speedup >= 3 else 'misses'} the 3x target). Bare forward (encoder + head) "
            f"on ragc's windows: fp32 {ms['fwd ragc fp32'][0]:.1f} ms, bf16 {ms['fwd ragc bf16'][0]:.1f} ms, "
            f"int8 {ms['fwd ragc int8'][0]:.1f} ms; "
            f"on llmlingua's (every chunk padded to 512 tokens): fp32 {ms['fwd llmlingua fp32'][0]:.1f} ms.",
            "",
            "`token level` = `compress_prompt(passages, rate, use_context_level_filter=False)`: the "
            "word-level compression ragc does, the base of every speed-up. The package's defaults "
            "(`use_context_level_filter=True` for a list of contexts) first score and drop whole "
            "passages (coarse-to-fine: one more forward over every chunk): timed only."]


def agreement_section(agree: dict[str, dict[str, float]], obs: list[Observed], rate: float) -> list[str]:
    ours_kept = np.concatenate([o.ours["auto"].kept[o.their_word[o.their_word >= 0]] for o in obs])
    their_kept = np.concatenate([o.theirs.kept for o in obs])
    our_rate, their_rate = np.mean([o.ours["auto"].rate for o in obs]), np.mean([o.theirs.rate for o in obs])
    lines = ["| ragc probabilities | words | (a) Spearman | (a) Pearson | (b) top-n same decision "
             "| (b) top-n Jaccard | (c) Jaccard, own rate rules |", "|---|---:|---:|---:|---:|---:|---:|"]
    for dtype, a in agree.items():
        lines.append(f"| {dtype} | {a['words']:.0f} | {a['spearman']:.4f} | {a['pearson']:.4f} | "
                     f"{a['topn_agree']:.3f} | {a['topn_jaccard']:.3f} | {a['rate_jaccard']:.3f} |")
    return [*lines, "",
            f"Achieved rate at {rate}: ragc {our_rate:.3f} (Qwen2.5 tokens), llmlingua {their_rate:.3f} "
            f"(cl100k tokens); WordPiece words kept: ragc {ours_kept.mean():.3f}, llmlingua "
            f"{their_kept.mean():.3f}. Max per-token |llmlingua - ragc fp32| keep probability: "
            f"{max(o.token_gap for o in obs):.1e}.",
            "",
            "Alignment: ragc words (`ragc.text.word_spans`) are the unit of (a) and (b). llmlingua's "
            "words are MiniLM WordPiece words (a token without `##` starts one); its token stream is "
            "checked to equal the MiniLM tokenisation of the passages less `[UNK]` (which it skips), and "
            "each of its words is mapped to the ragc word holding its first character; a ragc word's "
            "llmlingua probability is the mean of its pieces'. (a) pools all words of all inputs. "
            "(b): per input, n = the words ragc (default dtype) keeps at the rate; each side keeps its "
            "n best words by its own probabilities. (c): llmlingua keeps the words above a percentile "
            "of its cl100k-token-weighted word probabilities (per chunk), ragc the best words to a "
            "budget of decoder tokens; Jaccard of the kept WordPiece words (a kept ragc word keeps all "
            "its pieces)."]


def capped_note() -> str:
    """How torch's instruction sets were capped for this run, if they were (see cpu_speed.py)."""
    caps = [f"`{k}={os.environ[k]}`" for k in CAPS if os.environ.get(k)]
    return f"; torch capped by {', '.join(caps)}" if caps else ""


CAPS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS",
        "RAGC_FAST_BF16")


def report(t: dict[str, list[float]], agree: dict[str, dict[str, float]], obs: list[Observed],
           info: dict[str, Any], command: str) -> str:
    lines = [
        "# ragc `llmlingua2` vs the `llmlingua` package (LLMLingua-2 path), same MiniLM weights",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_info()}  ",
        f"CPU flags: **{cpu_flags()}**{capped_note()}  ",
        f"Inputs: {len(obs)} x {PER_INPUT} gold SQuAD dev paragraphs, "
        f"{np.mean([o.tokens for o in obs]):.0f} MiniLM tokens per input on average; rate {info['rate']}; "
        f"per-input median of {info['repeats']} runs after a warm-up; transformers {info['transformers']}.  ",
        f"Export check: max |exported softmax[..., 1] - our sigmoid| = {info['export_error']:.1e} (fp32).",
        "",
        *speed_section(t, info),
        "",
        *agreement_section(agree, obs, info["rate"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--n", type=int, default=20, help="inputs of 5 paragraphs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.33)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--decoder", default="qwen2.5-0.5b", help="tokenizer ragc counts budgets in")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "llmlingua_package.md")
    args = p.parse_args(argv)
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    counter = TokenCounter(load_tokenizer(args.decoder), args.decoder)
    dtypes = ("auto", "float32", "int8")
    comps = {d: LLMLingua2Compressor(budget=args.rate, placement={"dtype": d}) for d in dtypes}
    for c in comps.values():
        c.bind(counter)
        c.prepare()
    fp32 = comps["float32"].tagger()
    auto_dtype = comps["auto"].where.dtype
    bf16 = comps["auto"].tagger() if auto_dtype == "bfloat16" else l2.load_tagger("packaged", "cpu",
                                                                                   "bfloat16")
    folder = export_token_classifier(fp32, cache_dir() / "bench" / EXPORT_NAME)
    err = export_error(fp32, folder)
    if err > 1e-5:
        raise SystemExit(f"The exported classifier differs from our tagger by {err:.2e}; not comparable.")
    pc = prompt_compressor(folder)
    inputs = load_inputs(args.n, args.seed)
    obs = [observe(pc, comps, passages, args.rate) for passages in inputs]
    agree = {d: agreement(obs, d) for d in dtypes}
    t = timings(pc, comps, bf16, inputs, obs, args.rate, args.repeats)
    info = {"rate": args.rate, "repeats": args.repeats, "export_error": err,
            "auto_dtype": auto_dtype, "transformers": transformers.__version__}
    command = command_line("python benchmarks/llmlingua_package.py", sys.argv[1:] if argv is None else argv)
    text = report(t, agree, obs, info, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
