"""Resumable long-context evaluation of KV policies: one prefill per sample, every policy
decoded from a copy of its cache.

A run directory holds ``spec.json`` (the :class:`LongContextSpec`), ``predictions.jsonl``
(one line per sample and policy, appended as decoded, keyed ``<sample id>|<policy label>``)
and ``summary.json`` (per policy and length: accuracy, EM/F1, decode tokens/s, KV read).
Re-running skips what is done; a sample missing some policies is prefilled again and only
those are decoded. Because every policy decodes from the same prefill, differences between
them are the policies' alone (a 16k prefill of a 0.5B model takes minutes on a CPU; decoding
a short answer takes seconds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ragc.datasets.longctx import LongSample, longqa_samples, needle_samples
from ragc.errors import InvalidArgumentError
from ragc.eval.metrics import answer_contained, exact_match, f1_score, mean, mean_percent
from ragc.eval.runner import PREDICTIONS_FILE, SPEC_FILE, SUMMARY_FILE, _check_or_record, read_predictions
from ragc.io import claim_folder, write_atomic
from ragc.types import CompressedContext, TextSegment
from ragc.validate import check_choice, check_int

TASKS = ("needle", "longqa")


@dataclass(frozen=True)
class LongContextSpec:
    """One long-context evaluation.

    Parameters:
        name: run name.
        task: ``needle`` (passkey at ``depths`` in filler of ``lengths`` tokens) or ``longqa``
            (a question with its gold paragraph among ``distractors`` others).
        policies: label -> ``kv_policy`` config (``"dense"``, or ``{name: page_retrieval,
            token_budget: 512}``); every sample is decoded under each.
        lengths: needle context lengths in tokens.
        depths: needle depths (0 = first paragraph, 1 = last).
        per_cell: needle samples per (length, depth).
        n_questions: longqa questions.
        distractors: longqa distractor paragraphs.
        decoder: ``hf`` decoder settings (model, max_new_tokens, ...).
        dataset: where questions and filler come from.
    """

    name: str
    task: str = "needle"
    policies: dict[str, Any] = field(default_factory=lambda: {"full": "dense"})
    lengths: tuple[int, ...] = (4096,)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    per_cell: int = 1
    n_questions: int = 50
    distractors: int = 30
    decoder: dict[str, Any] = field(default_factory=lambda: {"model": "qwen2.5-0.5b", "max_new_tokens": 16})
    dataset: str = "squad-dev"
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        if not isinstance(self.policies, dict) or not self.policies:
            raise InvalidArgumentError("policies maps labels to kv_policy configs; give at least one.")
        for label in self.policies:
            if not isinstance(label, str) or not label or "|" in label:
                raise InvalidArgumentError(f"policy label {label!r} must be a non-empty string without '|'.")
        object.__setattr__(self, "lengths", tuple(self.lengths))
        object.__setattr__(self, "depths", tuple(float(d) for d in self.depths))
        check_int("per_cell", self.per_cell, minimum=1)
        check_int("n_questions", self.n_questions, minimum=1)
        check_int("distractors", self.distractors, minimum=0)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), sort_keys=True))  # type: ignore[no-any-return]

    def samples(self, data: Any, counter: Any) -> list[LongSample]:
        if self.task == "needle":
            return needle_samples(data, counter, self.lengths, self.depths, self.per_cell, self.seed)
        return longqa_samples(data, self.n_questions, self.distractors, self.seed)


def context_of(sample: LongSample, counter: Any) -> CompressedContext:
    """The sample's paragraphs as the decoder's context, in order."""
    segments = tuple(
        TextSegment(p.id, p.text, ((0, len(p.text)),), counter.count(p.text), p.title)
        for p in sample.passages
    )
    n = sum(s.tokens for s in segments)
    return CompressedContext(segments, n, n)


def run_long_context(
    spec: LongContextSpec,
    run_dir: str | Path,
    *,
    decoder: Any = None,
    dataset: Any = None,
    force: bool = False,
) -> dict[str, Any]:
    """Evaluate ``spec`` into ``run_dir`` (resuming it); returns the summary (see module doc)."""
    from ragc.config import ComponentSpec
    from ragc.datasets import load_dataset

    out = claim_folder(
        run_dir, ours=lambda p: (p / SPEC_FILE).is_file(), what="long-context run", force=force
    )
    _check_or_record(out, "spec", spec.to_dict())
    policies = {label: ComponentSpec.parse("kv_policy", cfg).build() for label, cfg in spec.policies.items()}
    if decoder is None:
        from ragc.decoders.hf import HFDecoder

        decoder = HFDecoder(**{"context_policy": "error", **spec.decoder})
    data = dataset if dataset is not None else load_dataset(spec.dataset)
    samples = spec.samples(data, decoder.token_counter)
    done = read_predictions(out / PREDICTIONS_FILE)
    todo = [s for s in samples if any(f"{s.id}|{label}" not in done for label in policies)]
    with (
        (out / PREDICTIONS_FILE).open("a", encoding="utf-8") as f,
        tqdm(total=len(todo), desc=spec.name, unit="sample") as bar,
    ):
        for sample in todo:
            pre = decoder.prefill_batch([sample.question], [context_of(sample, decoder.token_counter)])
            for label, policy in policies.items():
                if f"{sample.id}|{label}" in done:
                    continue
                gen = decoder.decode_prefilled(pre, kv_policy=policy)[0]
                f.write(json.dumps(_row(sample, label, gen), ensure_ascii=False) + "\n")
                f.flush()
            bar.update(1)
    rows = read_predictions(out / PREDICTIONS_FILE)
    summary = summarize(spec, [rows[f"{s.id}|{label}"] for s in samples for label in policies])
    write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def _row(sample: LongSample, label: str, gen: Any) -> dict[str, Any]:
    kv = gen.kv.to_dict() if gen.kv is not None else None
    return dict(
        qid=f"{sample.id}|{label}",
        sample=sample.id,
        policy=label,
        task=sample.task,
        length=sample.length,
        depth=sample.depth,
        question=sample.question,
        answers=list(sample.answers),
        prediction=gen.text,
        em=exact_match(gen.text, sample.answers),
        f1=f1_score(gen.text, sample.answers),
        contained=float(answer_contained(gen.text, sample.answers)),
        prompt_tokens=gen.prompt_tokens,
        generated_tokens=gen.generated_tokens,
        prefill=gen.prefill_s,
        decode=gen.decode_s,
        kv=kv,
        warnings=list(gen.warnings),
    )


def summarize(spec: LongContextSpec, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per policy and length: ``n``, ``accuracy`` (answer contained, %), ``em``/``f1`` (%), mean
    prompt tokens, decode tokens/s (generated tokens over decode seconds, summed) and the mean
    KV tokens attended per step and fraction of KV bytes read (1.0 for dense)."""
    cells: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["policy"], int(r["length"])), []).append(r)
    out = []
    for (label, length), group in cells.items():
        decode_s = sum(float(r["decode"]) for r in group)
        steps = sum(max(0, int(r["generated_tokens"]) - 1) for r in group)
        kv = [r["kv"] for r in group if r.get("kv")]
        out.append(
            dict(
                policy=label,
                length=length,
                n=len(group),
                accuracy=mean_percent(float(r["contained"]) for r in group),
                em=mean_percent(float(r["em"]) for r in group),
                f1=mean_percent(float(r["f1"]) for r in group),
                prompt_tokens=mean(float(r["prompt_tokens"]) for r in group),
                decode_tokens_per_s=steps / decode_s if decode_s > 0 else 0.0,
                kv_tokens_per_step=mean(float(k["tokens_per_step"]) for k in kv) if kv else None,
                kv_read_fraction=mean(float(k["read_fraction"]) for k in kv) if kv else 1.0,
            )
        )
    return {"name": spec.name, "task": spec.task, "cells": out}
