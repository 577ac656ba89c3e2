"""kvpress's prefill-time KV eviction presses on needle-in-a-haystack samples, ragc's prompt.

Usage (from the repository root; runs in the kvpress venv, not ragc's, and needs no ragc)::

    bash benchmarks/setup_kvpress_env.sh      # once: makes .venv-kvpress (kvpress 0.5.5, transformers 5.2.0)
    MODEL=$(.venv/bin/python -c "from ragc.models import decoder_path; print(decoder_path('qwen2.5-0.5b'))")
    "${KVPRESS_VENV:-.venv-kvpress}/bin/python" benchmarks/kvpress_needle.py \\
        --samples SAMPLES.jsonl --model-dir "$MODEL" --budget 256 \\
        [--presses snapkv,knorm,expected_attention,streaming_llm,none] [--max-new-tokens 16] \\
        --out kvpress.json

The benchmark behind ``benchmarks/kv.md`` writes the needle samples it gives ragc as JSONL (one
object a line: ``id``, ``context``, ``question``, ``answers``, ``system``, and optionally
``passages``: ``[{"text": ..., "title": ...}, ...]``; other fields are ignored), runs this as a
subprocess with the kvpress venv's python, and reads ``--out``. With ``passages`` (e.g. from
``ragc.datasets.longctx.LongSample.passages``) the prompt is token for token the one ragc's
decoder reads for that context; without, ``context`` is one untitled passage.

The prompt is ragc's (``ragc.decoders.prompt.build_prompt``): the chat template around the
sample's ``system`` message and one user turn ``Context:\\n[1] Title: text\\n[2] ...\\n\\n
Question: {question}``, the template tokenized with its control tokens and each passage and
the question as text (special-token strings split), each piece on its own. kvpress's
``KVPressTextGenerationPipeline`` cannot take a system message (it templates
``[{"role": "user", "content": context}]`` only, and Qwen's template then adds its default
"You are Qwen..." system turn), so this script does what that pipeline's ``_forward`` does,
with our ids: under ``with press(model)`` it prefills ``model.model`` on everything up to and
including the context (template head, system message, ``Context:\\n[1] ...``) - the press's
forward hooks evict KV pairs there - then, outside the press, the pipeline's own
``generate_answer`` feeds the rest of the user turn (``\\n\\nQuestion: ...<|im_end|>\\n
<|im_start|>assistant\\n``) uncompressed, at positions after the *uncompressed* prefill length,
and decodes greedily to ``--max-new-tokens`` or ``<|im_end|>``. So no press sees the question
(SnapKV's observation window is the last 64 prefill tokens: the end of the haystack).

``--budget`` is the number of KV pairs each layer keeps after prefill: a press gets
``compression_ratio = 1 - budget / prefill_tokens`` per sample (prefill = template head +
context, all of which kvpress compresses), or 0 when the prefill is no longer than the
budget. ``none`` is the full cache. The model runs in float32 on CPU with SDPA attention
(SnapKV and ExpectedAttention compute their own scores; none of these presses needs eager
attention weights). Nothing is downloaded: presses that fetch weights or statistics from the
Hugging Face hub (QFilter, DuoAttention, ...) are refused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VENV = os.environ.get("KVPRESS_VENV") or ".venv-kvpress"  # setup_kvpress_env.sh makes it
DEFAULT_PRESSES = "snapkv,knorm,expected_attention,streaming_llm"
#: Our press names -> kvpress class names (``None``: the full cache, no press).
PRESSES: dict[str, str | None] = {
    "snapkv": "SnapKVPress",
    "knorm": "KnormPress",
    "expected_attention": "ExpectedAttentionPress",
    "streaming_llm": "StreamingLLMPress",
    "tova": "TOVAPress",
    "random": "RandomPress",
    "none": None,
}
#: kvpress presses that download from the Hugging Face hub (weights, statistics, head patterns).
HUB_PRESSES = {
    "qfilter": "QFilterPress loads per-model Q-filters from the hub (nthngdy/<model>_qfilt)",
    "duo_attention": "DuoAttentionPress downloads its attention-head patterns",
    "expected_attention_stats": "ExpectedAttentionStatsPress loads query statistics from the hub",
    "kvzap": "KVzapPress loads its scorer model from the hub",
    "fastkvzip": "FastKVzipPress downloads its gates from the hub",
    "restorekv": "RestoreKVPress downloads its restore embeddings from the hub",
    "lukv": "LUKVPress downloads its tables",
}
FIELDS = ("id", "context", "question", "answers", "system")
_SENTINEL = "\u2063RAGC_CONTEXT\u2063"  # as ragc.decoders.prompt: split points in the template
_END = "\u2063RAGC_USER_END\u2063"
TEXT_KWARGS: dict[str, Any] = {"add_special_tokens": False, "split_special_tokens": True}  # ragc.tokens


@dataclass(frozen=True)
class Sample:
    id: str
    passages: tuple[tuple[str, str], ...]  # (title, text) in order: the context
    question: str
    answers: tuple[str, ...]
    system: str


@dataclass(frozen=True)
class PromptIds:
    """A sample's prompt: ``prefill`` (template head + context) then ``question`` (rest of the turn)."""

    prefill: tuple[int, ...]
    question: tuple[int, ...]
    context_tokens: int  # of the passages alone ("[1] Title: text\n[2] ...")


@dataclass(frozen=True)
class Result:
    id: str
    prediction: str
    correct: bool
    context_tokens: int
    prefill_tokens: int
    question_tokens: int
    compression_ratio: float
    kept_kv_tokens: int
    prefill_s: float
    decode_s: float


def parse_presses(spec: str) -> list[str]:
    """The comma list of press names, checked against :data:`PRESSES`."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise SystemExit("--presses is empty; name at least one of " + ", ".join(PRESSES) + ".")
    for name in names:
        if name in HUB_PRESSES:
            raise SystemExit(f"Press {name!r} is not supported offline: {HUB_PRESSES[name]}.")
        if name not in PRESSES:
            raise SystemExit(f"Unknown press {name!r}; known: {', '.join(PRESSES)}.")
    if len(set(names)) != len(names):
        raise SystemExit(f"--presses names a press twice: {spec!r}.")
    return names


def load_samples(path: Path) -> list[Sample]:
    """The JSONL samples (fields :data:`FIELDS`; others ignored)."""
    samples = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [k for k in FIELDS if k not in row]
            if missing:
                raise SystemExit(f"{path}:{n}: missing field(s) {', '.join(missing)}.")
            answers = row["answers"]
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                raise SystemExit(f"{path}:{n}: answers must be a non-empty list of strings.")
            passages = _passages(row, f"{path}:{n}")
            samples.append(Sample(str(row["id"]), passages, row["question"], tuple(answers), row["system"]))
    if not samples:
        raise SystemExit(f"{path} holds no samples.")
    return samples


def _passages(row: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """``passages`` ([{"text", "title"?}, ...]) if the row has them, else ``context`` as one untitled one."""
    if "passages" not in row:
        return (("", row["context"]),)
    items = row["passages"]
    if not isinstance(items, list) or not items:
        raise SystemExit(f"{where}: passages must be a non-empty list of {{text, title}} objects.")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise SystemExit(f"{where}: every passage needs a text string, got {item!r:.80}.")
        title = item.get("title") or ""
        if not isinstance(title, str):
            raise SystemExit(f"{where}: a passage title must be a string, got {title!r:.80}.")
        out.append((title, item["text"]))
    return tuple(out)


def prompt_ids(tokenizer: Any, sample: Sample) -> PromptIds:
    """ragc's prompt (``build_prompt``), split where the context ends (see module docstring)."""
    messages = [
        {"role": "system", "content": sample.system},
        {"role": "user", "content": f"Context:\n{_SENTINEL}\n\nQuestion: {sample.question}{_END}"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head, _, rest = rendered.partition(_SENTINEL)
    asked, _, tail = rest.partition(_END)
    if not tail:
        raise SystemExit("The model's chat template dropped the user turn; it cannot be used here.")

    def template(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def text(s: str) -> list[int]:
        return tokenizer(s, **TEXT_KWARGS)["input_ids"] if s else []

    # As ragc's _Context.text: "[i] Title: text" per passage, "\n" before all but the first,
    # each passage tokenized on its own.
    context = [
        tok
        for i, (title, body) in enumerate(sample.passages, 1)
        for tok in text(("\n" if i > 1 else "") + f"[{i}] " + (f"{title}: " if title else "") + body)
    ]
    return PromptIds(
        prefill=(*template(head), *context),
        question=(*text(asked), *template(tail)),
        context_tokens=len(context),
    )


def make_press(kvpress: Any, name: str, ratio: float) -> Any:
    cls = PRESSES[name]
    return None if cls is None else getattr(kvpress, cls)(compression_ratio=ratio)


def run_one(
    model: Any, pipe: Any, press: Any, ids: PromptIds, max_new_tokens: int
) -> tuple[str, int, float, float]:
    """(prediction, kept KV pairs, prefill s, decode s), as ``KVPressTextGenerationPipeline._forward``."""
    import contextlib

    import torch
    from transformers import DynamicCache

    context_ids = torch.tensor([ids.prefill], dtype=torch.long)
    question_ids = torch.tensor([ids.question], dtype=torch.long)
    cache = DynamicCache()
    with torch.no_grad():
        t0 = time.perf_counter()
        with press(model) if press is not None else contextlib.nullcontext():
            model.model(input_ids=context_ids, past_key_values=cache)  # no lm head, as kvpress
        t1 = time.perf_counter()
        kept = cache.get_seq_length()
        answer = pipe.generate_answer(
            question_ids=question_ids,
            cache=cache,
            context_length=len(ids.prefill),
            max_new_tokens=max_new_tokens,
        )
        t2 = time.perf_counter()
    return answer, kept, t1 - t0, t2 - t1


def warm_up(model: Any, ids: PromptIds) -> None:
    """One short uncompressed forward, so the first timed prefill pays no one-off start-up cost."""
    import torch

    with torch.no_grad():
        model.model(input_ids=torch.tensor([ids.prefill[:64]], dtype=torch.long))


def ratio_for(budget: int, prefill_tokens: int) -> float:
    """The compression ratio that keeps ``budget`` of ``prefill_tokens`` pairs."""
    if prefill_tokens <= budget:
        return 0.0
    # kvpress keeps int(n * (1 - ratio)); the half token keeps float rounding off the floor.
    return 1.0 - (budget + 0.5) / prefill_tokens


def load(model_dir: Path, threads: int) -> tuple[Any, Any, Any]:
    """(kvpress module, model, pipeline) on CPU in float32, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import kvpress
    except ImportError as e:
        raise SystemExit(
            f"kvpress is not installed here ({e}): run benchmarks/setup_kvpress_env.sh and use "
            f"{VENV}/bin/python."
        ) from e
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its per-tensor "Loading weights" bar floods a log
    if threads:
        torch.set_num_threads(threads)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"{model_dir} is not a Hugging Face model folder (no config.json).")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa"
    )  # on CPU: no device_map
    model.eval()
    if not isinstance(model, kvpress.SUPPORTED_MODELS):
        raise SystemExit(
            f"kvpress supports {[c.__name__ for c in kvpress.SUPPORTED_MODELS]}, not {type(model).__name__}."
        )
    if getattr(tokenizer, "chat_template", None) is None:
        raise SystemExit(f"{model_dir} has no chat template; this benchmark needs an instruct model.")
    pipe = kvpress.KVPressTextGenerationPipeline(model=model, tokenizer=tokenizer, device="cpu")
    return kvpress, model, pipe


def run_press(
    kvpress: Any, model: Any, pipe: Any, name: str, samples: list[Sample], prompts: list[PromptIds], args: Any
) -> list[Result]:
    """Every sample through press ``name`` at ``args.budget`` (progress on stderr)."""
    rows = []
    for s, ids in zip(samples, prompts):
        ratio = 0.0 if PRESSES[name] is None else ratio_for(args.budget, len(ids.prefill))
        press = make_press(kvpress, name, ratio)
        answer, kept, prefill_s, decode_s = run_one(model, pipe, press, ids, args.max_new_tokens)
        correct = any(a in answer for a in s.answers)
        rows.append(
            Result(
                s.id,
                answer,
                correct,
                ids.context_tokens,
                len(ids.prefill),
                len(ids.question),
                ratio,
                kept,
                prefill_s,
                decode_s,
            )
        )
        print(
            f"{name:>20} {s.id}: kept {kept}/{len(ids.prefill)} {prefill_s:.2f}s -> {answer!r}",
            file=sys.stderr,
        )
    return rows


def summary(results: dict[str, list[Result]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, rows in results.items():
        out[name] = {
            "accuracy": sum(r.correct for r in rows) / len(rows),
            "mean_kept_kv_tokens": statistics.fmean(r.kept_kv_tokens for r in rows),
            "mean_prefill_s": statistics.fmean(r.prefill_s for r in rows),
            "mean_decode_s": statistics.fmean(r.decode_s for r in rows),
            "samples": [asdict(r) for r in rows],
        }
    return out


def table(summ: dict[str, dict[str, Any]]) -> str:
    lines = ["| press | accuracy | kept KV | prefill s | decode s |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, s in summ.items():
        lines.append(
            f"| {name} | {s['accuracy']:.3f} | {s['mean_kept_kv_tokens']:.0f} | "
            f"{s['mean_prefill_s']:.2f} | {s['mean_decode_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="kvpress presses on needle-in-a-haystack samples (ragc's prompt)."
    )
    p.add_argument(
        "--samples",
        type=Path,
        required=True,
        help="JSONL: id, context, question, answers, system[, passages]",
    )
    p.add_argument("--model-dir", type=Path, required=True, help="local HF folder of the decoder + tokenizer")
    p.add_argument("--budget", type=int, required=True, help="KV pairs kept per layer after prefill")
    p.add_argument("--presses", default=DEFAULT_PRESSES, help=f"comma list of {', '.join(PRESSES)}")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    args = p.parse_args(argv)
    if args.budget <= 0:
        raise SystemExit(f"--budget must be a positive number of tokens, got {args.budget}.")
    if args.max_new_tokens <= 0:
        raise SystemExit(f"--max-new-tokens must be positive, got {args.max_new_tokens}.")
    names = parse_presses(args.presses)
    samples = load_samples(args.samples)
    kvpress, model, pipe = load(args.model_dir, args.threads)
    window = model.config.max_position_embeddings
    prompts = [prompt_ids(pipe.tokenizer, s) for s in samples]
    for s, ids in zip(samples, prompts):
        if len(ids.prefill) + len(ids.question) + args.max_new_tokens > window:
            raise SystemExit(f"Sample {s.id!r} needs more than the model's {window} positions.")
    warm_up(model, prompts[0])
    results = {name: run_press(kvpress, model, pipe, name, samples, prompts, args) for name in names}
    import importlib.metadata as md

    import torch
    import transformers

    summ = summary(results)
    report = {
        "kvpress": md.version("kvpress"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model_dir": str(args.model_dir),
        "samples_file": str(args.samples),
        "n_samples": len(samples),
        "budget": args.budget,
        "max_new_tokens": args.max_new_tokens,
        "presses": summ,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(summ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
