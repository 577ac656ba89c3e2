"""Soft-compressor training step: what the shared training forward saves, side by side.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/soft_train_step.py [--decoder smollm2-135m]
        [--batch 4] [--answer-window 0] [--reps 3] [--out benchmarks/results/soft_train_step.md]

Times one CompLLM answer-stage step (loss with the contrast hinge and KL teacher, then
backward) on the same SQuAD train batch, cycling through three ways of running the frozen
decoder so all see the same machine load:

- ``full``: every prompt position through the vocabulary projection, no cached head;
- ``targets``: the projection only from the earliest target on (``logits_to_keep``);
- ``targets+head``: as shipped, also continuing from the cached keys and values of the
  chat-template head every prompt starts with (:class:`ragc.training.soft.PromptHead`).

Also checks all three give the same loss (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from ragc.eval.report import command_line, machine_info
from ragc.training.compllm import CompLLMTrainConfig, Trainer, squad_examples

VARIANTS = {
    "full": "every prompt position, no cached head (before)",
    "targets": "from the earliest target, no cached head",
    "targets+head": "from the earliest target, cached head (now)",
}


def step(trainer: Trainer, batch: list, variant: str) -> tuple[float, float]:
    """Seconds and loss of one forward + backward (no optimiser update)."""
    with ExitStack() as patches:
        if variant == "full":  # target_logits looks the check up in ragc.decoders.generate per call
            check = "ragc.decoders.generate.accepts_logits_to_keep"
            patches.enter_context(mock.patch(check, return_value=False))
        if variant != "targets+head":  # no cached head: every prompt from its first token
            patches.enter_context(mock.patch.object(trainer, "head", None))
        t0 = time.perf_counter()
        loss, _ = trainer.loss(batch)
        trainer.opt.zero_grad(set_to_none=True)
        loss.backward()
        return time.perf_counter() - t0, loss.item()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--decoder", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--answer-window", type=int, default=0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    cfg = CompLLMTrainConfig(decoder=args.decoder, questions=args.batch, batch_size=args.batch,
                             answer_window=args.answer_window, rates=(0.5,), contrast_weight=1.0)
    trainer = Trainer(cfg, device="cpu")
    batch = squad_examples(cfg, trainer.dec.tokenizer)
    step(trainer, batch, "targets+head")  # warm-up
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    losses: dict[str, float] = {}
    for _ in range(args.reps):
        for variant in VARIANTS:
            sec, loss = step(trainer, batch, variant)
            times[variant].append(sec)
            losses[variant] = loss
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    command = command_line("python benchmarks/soft_train_step.py", sys.argv[1:] if argv is None else argv)
    lines = [
        "# Soft-compressor training step: target-position logits and the cached prompt head",
        "",
        f"Command: `{command}`",
        f"Machine: {machine_info()}",
        "",
        f"One CompLLM answer-stage step (contrast hinge + KL, forward + backward), decoder "
        f"`{args.decoder}`, batch {args.batch}, answer window {args.answer_window or 'whole paragraph'}, "
        f"prompt head {len(trainer.head)} tokens, median of {args.reps} rounds of the three variants "
        "in turn.",
        "",
        "| vocabulary projection, prompt head | seconds / step | vs before | loss |",
        "|---|---|---|---|",
    ]
    base = statistics.median(times["full"])
    for variant, name in VARIANTS.items():
        med = statistics.median(times[variant])
        lines.append(f"| {name} | {med:.2f} | {base / med:.2f}x | {losses[variant]:.4f} |")
    lines += ["", f"Peak RSS of the process {rss / 1024:.0f} MiB."]
    text = "\n".join(lines) + "\n"
    print(text)
    ref = losses["full"]
    if any(abs(v - ref) > 1e-3 * max(1.0, abs(ref)) for v in losses.values()):
        print("error: the variants gave different losses", file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
