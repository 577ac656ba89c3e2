"""``ragc train llmlingua2 | xrag | compllm``: flags generated from the training configs.

Every field of a trainer's config dataclass is a ``--flag`` with its default and help;
``--config train.yaml`` reads the settings from a file first (flags given override it).
Each trainer is called the same way: ``train(cfg, out, device=...)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from ragc.cli.common import add_config_arguments, config_from_args

#: command -> (training module, config class, what the artefact is used with)
TRAINERS = {
    "llmlingua2": (
        "ragc.training.llmlingua2",
        "LLMLingua2TrainConfig",
        "train the LLMLingua-2 keep/drop classifier on MiniLM",
    ),
    "xrag": (
        "ragc.training.xrag",
        "XRAGTrainConfig",
        "train an xRAG projector (retriever embedding -> one decoder token)",
    ),
    "compllm": (
        "ragc.training.compllm",
        "CompLLMTrainConfig",
        "train CompLLM's LoRA + concept head (segment-wise soft compression)",
    ),
    "generative": (
        "ragc.training.generative",
        "GenerativeTrainConfig",
        "train the generative retriever's LoRA (question -> n-grams of its gold paragraph)",
    ),
}


#: Short flags of earlier versions, still accepted.
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "llmlingua2": {"trained_layers": ("--layers",)},
    "xrag": {"stage1_paragraphs": ("--stage1",), "stage2_questions": ("--stage2",)},
}


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train a learned component")
    tsub = p.add_subparsers(dest="train_command", required=True)
    for name, (module, config, text) in TRAINERS.items():
        t = tsub.add_parser(name, help=text, description=text)
        t.add_argument("--out", required=True, help="folder for config.json + weights.safetensors")
        t.add_argument("--config", dest="train_config", help="YAML/JSON file of these settings")
        t.add_argument("--device", help="torch device (default: the best available)")
        t.add_argument("--force", action="store_true", help="write into an --out folder holding other files")
        add_config_arguments(t, getattr(importlib.import_module(module), config), ALIASES.get(name))
        t.set_defaults(func=run, trainer=name)


def run(args: argparse.Namespace) -> int:
    module_name, config, _ = TRAINERS[args.trainer]
    module = importlib.import_module(module_name)
    cfg = config_from_args(getattr(module, config), args)
    record = module.train(cfg, args.out, device=args.device, force=args.force)
    print(json.dumps(record.get("final", record), indent=2))
    if args.trainer == "generative":
        print(
            f"[ragc] generative adapter in {args.out}; use it with the generative retriever "
            f"(adapter={args.out!r} in the config)"
        )
    else:
        print(
            f"[ragc] {args.trainer} weights in {args.out}; use them with --compressor {args.trainer} "
            f"(weights={args.out!r} in the config)"
        )
    return 0
