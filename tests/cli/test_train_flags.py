"""`ragc train` flags come from the training config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path

import pytest

from ragc.cli.common import add_config_arguments, config_from_args, field_help
from ragc.cli.train import TRAINERS
from ragc.errors import ConfigError


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_every_setting_is_a_documented_flag(name: str) -> None:
    module, config, _ = TRAINERS[name]
    cls = getattr(importlib.import_module(module), config)
    helps = field_help(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    assert sorted(helps) == sorted(fields), "every field has its line in the docstring's Parameters"
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    defaults = config_from_args(cls, parser.parse_args([] if name != "llmlingua2" else ["--labels", "x"]))
    assert defaults == cls(**({"labels": "x"} if name == "llmlingua2" else {}))  # defaults unchanged


def test_flags_and_a_config_file_build_the_config(tmp_path: Path) -> None:
    from ragc.training.compllm import CompLLMTrainConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", dest="train_config")
    add_config_arguments(parser, CompLLMTrainConfig)
    (tmp_path / "train.yaml").write_text("questions: 12\nrates: [0.5]\nlr: 0.001\n")
    given = ["--config", str(tmp_path / "train.yaml"), "--lr", "0.002", "--rates", "0.5,0.25"]
    args = parser.parse_args(given)
    cfg = config_from_args(CompLLMTrainConfig, args)
    assert (cfg.questions, cfg.lr, cfg.rates) == (12, 0.002, (0.5, 0.25))  # flags override the file
    (tmp_path / "bad.yaml").write_text("questoins: 12\n")
    with pytest.raises(ConfigError, match="questoins"):
        config_from_args(CompLLMTrainConfig, parser.parse_args(["--config", str(tmp_path / "bad.yaml")]))
