"""Soft-compressor training step: vocabulary projection at target positions only vs everywhere.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/soft_train_step.py [--decoder smollm2-135m]
        [--batch 4] [--answer-window 0] [--reps 3] [--out benchmarks/results/soft_train_step.md]

Times one CompLLM answer-stage step (loss with the contrast hinge and KL teacher, then
backward) on the same SQuAD train batch, alternating the two ways of computing the
target logits so both see the same machine load: ``target_logits`` as shipped (the
decoder's ``logits_to_keep`` keeps positions from the earliest target on) and the full
projection of every prompt position (what it did before). Also checks both give the same
loss (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

from ragc.eval.report import machine_info
from ragc.training.compllm import CompLLMTrainConfig, Trainer, squad_examples


def step(trainer: Trainer, batch: list, full: bool) -> tuple[float, float]:
    """Seconds and loss of one forward + backward (no optimiser update)."""
    with mock.patch("ragc.decoding.accepts_logits_to_keep", return_value=not full):
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
    trainer = Trainer(cfg, "cpu")
    batch = squad_examples(cfg, trainer.dec.tokenizer)
    step(trainer, batch, False)  # warm-up
    times: dict[bool, list[float]] = {False: [], True: []}
    losses: dict[bool, float] = {}
    for _ in range(args.reps):
        for full in (True, False):
            sec, loss = step(trainer, batch, full)
            times[full].append(sec)
            losses[full] = loss
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lines = [
        "# Soft-compressor training step: target-position logits vs full projection",
        "",
        f"Command: `python benchmarks/soft_train_step.py {shlex.join(sys.argv[1:])}`",
        f"Machine: {machine_info()}",
        "",
        f"One CompLLM answer-stage step (contrast hinge + KL, forward + backward), decoder "
        f"`{args.decoder}`, batch {args.batch}, answer window {args.answer_window or 'whole paragraph'}, "
        f"median of {args.reps} alternating repetitions.",
        "",
        "| logits | seconds / step | loss |",
        "|---|---|---|",
    ]
    for full, name in ((True, "every prompt position (before)"), (False, "from the earliest target (now)")):
        lines.append(f"| {name} | {statistics.median(times[full]):.2f} | {losses[full]:.4f} |")
    speed = statistics.median(times[True]) / statistics.median(times[False])
    lines += ["", f"Speed-up: **{speed:.2f}x** (peak RSS of the process {rss0 / 1024:.0f} MiB)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if abs(losses[True] - losses[False]) > 1e-3 * max(1.0, abs(losses[True])):
        print("error: the two paths gave different losses", file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
