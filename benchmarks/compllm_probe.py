"""Do CompLLM concepts carry their text? Held-out cross-entropies, no generation.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/compllm_probe.py --decoder smollm2-135m \\
        --weights runs/train/compllm-smol [--n 40] [--rate 0.5]

For ``n`` SQuAD **train** questions held out from every given artefact's training data
(its questions and the paragraphs of its reconstruction windows), prints the mean
cross-entropy (nats per token) of

* the gold answer given the question and: no context, the full gold paragraph, the
  paragraph's untrained concepts (each concept = mean input embedding of its token group,
  the format-/2 start), and each artefact's concepts;
* repeating the first two segments of the paragraph from their concepts (reconstruction);
* ``own vs other``: the answer from its own paragraph's concepts minus from the next
  question's paragraph's concepts (negative = the concepts are specific to their text).

A report is written with ``--out FILE``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragc.artefacts import artefact_dir, read_config, read_weights
from ragc.compressors.concept_encoder import FORMATS
from ragc.eval.report import command_line, machine_info
from ragc.training.compllm import CompLLMTrainConfig, Item, Trainer, recon_windows, squad_examples
from ragc.training.soft import RECONSTRUCT_QUESTION, Sample, batch_embeds, sample_ce, target_logits
from ragc.types import CompressedContext, TextSegment


def held_out(trainer: Trainer, configs: Sequence[CompLLMTrainConfig], n: int, seed: int) -> list[Any]:
    """``n`` SQuAD train questions (with gold paragraphs) no artefact trained on."""
    tok = trainer.dec.tokenizer
    used_q, used_p = set(), set()
    for cfg in configs:
        used_q |= {(ex.passage.id, ex.question) for ex in squad_examples(cfg, tok)}
        used_p |= {w.passage_id for w in recon_windows(cfg, tok)}
    pool_cfg = CompLLMTrainConfig(decoder=trainer.cfg.decoder, questions=4 * n + 400, seed=seed)
    pool = squad_examples(pool_cfg, tok)
    out = [ex for ex in pool if (ex.passage.id, ex.question) not in used_q and ex.passage.id not in used_p]
    return out[:n]


def answer_ce(trainer: Trainer, examples: Sequence[Any], context: str, rate: float) -> list[float]:
    """Per-question answer cross-entropy with ``context`` = none | text | concepts | other."""
    import torch

    tok = trainer.dec.tokenizer
    out = []
    with torch.no_grad():
        for b, ex in enumerate(examples):
            if context in ("concepts", "other"):
                src = examples[(b + 1) % len(examples)] if context == "other" else ex
                ids = tok(src.passage.text, add_special_tokens=False)["input_ids"]
                logits = trainer.student_logits([Item(src.passage.id, ids, rate, ex.question, ex.target)])
            else:
                segs = (
                    (TextSegment(ex.passage.id, ex.passage.text, ((0, len(ex.passage.text)),), 0),)
                    if context == "text"
                    else ()
                )
                sample = Sample(ex.question, CompressedContext(segs, 1, 1), ex.target)
                emb, mask, starts = batch_embeds(trainer.dec, [sample])
                logits = target_logits(trainer.dec.lm, emb, mask, starts, [len(ex.target)])
            out.append(float(sample_ce(logits, [ex.target])[0]))
    return out


def recon_ce(trainer: Trainer, examples: Sequence[Any], rate: float, segments: int = 2) -> list[float]:
    import torch

    tok = trainer.dec.tokenizer
    out = []
    with torch.no_grad():
        for ex in examples:
            ids = tok(ex.passage.text, add_special_tokens=False)["input_ids"][: 20 * segments]
            target = (*ids, tok.eos_token_id)
            logits = trainer.student_logits([Item(ex.passage.id, ids, rate, RECONSTRUCT_QUESTION, target)])
            out.append(float(sample_ce(logits, [target])[0]))
    return out


def train_config(folder: Path) -> CompLLMTrainConfig:
    """The training config recorded in an artefact (to hold its training data out)."""
    t = read_config(folder, FORMATS).get("training", {})
    fields = CompLLMTrainConfig.__dataclass_fields__
    kw: dict[str, Any] = {k: (tuple(v) if k == "rates" else v) for k, v in t.items() if k in fields}
    return CompLLMTrainConfig(**kw)


def load_into(trainer: Trainer, folder: Path) -> None:
    """Put an artefact's trained LoRA + head into the trainer's concept encoder."""
    import torch

    meta = read_config(folder, FORMATS)
    if meta["decoder"] != trainer.cfg.decoder:
        raise SystemExit(f"{folder} is for decoder {meta['decoder']!r}, not {trainer.cfg.decoder!r}")
    state = read_weights(folder)
    # the artefact's format decides the pooled term and the head's scale (/2: unscaled)
    trainer.concepts.meta = {k: v for k, v in trainer.concepts.meta.items() if k != "head_scale"}
    trainer.concepts.meta.update({k: meta[k] for k in ("format", "head_scale") if k in meta})
    with torch.no_grad():
        for k, v in trainer.concepts.lora.params.items():
            v.copy_(state[f"lora.{k}"].to(v.dtype))
        for k, v in trainer.concepts.head.state_dict().items():
            v.copy_(state[f"head.{k}"].to(v.dtype))


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--decoder", default="qwen2.5-0.5b")
    p.add_argument("--weights", default="packaged", help="comma-separated artefact folders ('packaged' ok)")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    trainer = Trainer(CompLLMTrainConfig(decoder=args.decoder), device="cpu")
    # (row label: the folder as a command line records it, no host path; artefact folder)
    folders: list[tuple[str, Path]] = []
    for w in (x.strip() for x in args.weights.split(",") if x.strip()):
        found = artefact_dir("compllm", w, "CompLLM weights", args.decoder)
        folders.append((command_line("", [str(found)]), found))
    configs = [train_config(f) for _, f in folders]
    examples = held_out(trainer, configs, args.n, args.seed)
    rows: list[tuple[str, float, float | None, float | None]] = []

    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs)

    rows.append(("no context", mean(answer_ce(trainer, examples, "none", args.rate)), None, None))
    rows.append(("full text", mean(answer_ce(trainer, examples, "text", args.rate)), None, None))
    # The fresh head is zero, so each concept starts as its token group's mean embedding.
    for name, folder in [("untrained (mean-pooled)", None), *folders]:
        if folder is not None:
            load_into(trainer, folder)
        own = answer_ce(trainer, examples, "concepts", args.rate)
        other = answer_ce(trainer, examples, "other", args.rate)
        rows.append((name, mean(own), mean(recon_ce(trainer, examples, args.rate)), mean(own) - mean(other)))
        print(rows[-1], flush=True)
    command = command_line("python benchmarks/compllm_probe.py", sys.argv[1:] if argv is None else argv)
    lines = [
        f"# CompLLM probe: {args.decoder}, rate {args.rate:g}, "
        f"{len(examples)} held-out SQuAD train questions",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_info()}",
        "",
        "| context | answer CE | reconstruction CE (2 segments) | own - other answer CE |",
        "|---|---|---|---|",
    ]
    for name, ce, rec, gap in rows:
        lines.append(f"| {name} | {ce:.2f} | {'-' if rec is None else f'{rec:.2f}'} | "
                     f"{'-' if gap is None else f'{gap:+.2f}'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
