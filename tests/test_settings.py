"""Grouped settings, their deprecated flat keys, placement, validation and atomic writes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from ragc import registry
from ragc.compressors.allocation import Allocation
from ragc.compressors.token_scoring import Units, Windows
from ragc.config import PipelineConfig
from ragc.device import Placement, resolve_precision
from ragc.errors import ConfigError, InvalidArgumentError
from ragc.io import write_atomic, write_json, write_with
from ragc.validate import check_bool, check_choice, check_int, check_number


def test_settings_parse_instances_mappings_and_shorthands() -> None:
    assert Allocation.parse("rank") == Allocation(mode="rank")
    assert Allocation.parse({"mode": "rank", "rank_decay": 0.25}) == Allocation("rank", 0.25)
    assert Allocation.parse(None) == Allocation()
    assert Units.parse("clause") == Units(kind="clause")
    assert Placement.parse("cuda:1") == Placement(device="cuda:1")
    # A mapping fills the fields it leaves out from the component's own defaults.
    base = Windows(tokens=1024, overlap=128, batch_size=4)
    assert Windows.parse({"batch_size": 8}, base) == Windows(1024, 128, 8)
    with pytest.raises(ConfigError, match="Unknown Allocation setting"):
        Allocation.parse({"mode": "rank", "decay": 0.5})
    with pytest.raises(ConfigError, match="mapping"):
        Windows.parse(3)
    with pytest.raises(InvalidArgumentError, match="overlap"):
        Windows(tokens=64, overlap=64)


def test_old_flat_keys_fold_into_their_group_with_a_warning(smol_counter: object) -> None:
    with pytest.warns(DeprecationWarning, match="allocation"):
        old = registry.create("compressor", "truncate", allocation="rank", rank_decay=0.25, min_share=4)
    assert old._allocation == Allocation("rank", 0.25, 4)
    with pytest.warns(DeprecationWarning, match="unit"):
        words = registry.create("compressor", "random", unit="clause", clause_words=5,
                                attach_punctuation=True)
    assert words._unit == Units("clause", 5, True)
    with pytest.warns(DeprecationWarning, match="windows"):
        ppl = registry.create("compressor", "perplexity", max_length=64, overlap=8, batch_size=2)
    assert ppl._windows == Windows(64, 8, 2)
    # A flat key whose group the config leaves out starts from the component's default:
    # the word-level compressors default to "global", where min_share has no meaning.
    with pytest.raises(InvalidArgumentError, match="min_share only"), pytest.warns(DeprecationWarning):
        registry.create("compressor", "random", min_share=3)
    # The same through a pipeline config, where these keys are public.
    cfg = PipelineConfig.from_dict({"compressor": {"name": "sentences", "device": "cpu", "budget": 0.5}})
    with pytest.warns(DeprecationWarning, match="placement"):
        sentences = cfg.compressor.build()
    assert sentences.where.device == "cpu"
    assert sentences.where.dtype == resolve_precision("auto", "cpu", sentences.int8)


def test_a_compressor_cache_dir_becomes_its_segment_cache(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match="segment_cache"):
        comp = registry.create("compressor", "xrag", cache_dir=str(tmp_path / "segs"))
    assert comp.segment_cache.root == (tmp_path / "segs").resolve()


def test_placement_precedence_own_then_pipeline_then_component_default() -> None:
    from ragc.compressors.sentences import SentenceCompressor

    class Fp32Sentences(SentenceCompressor):
        default_placement = Placement(dtype="float32")

    assert Fp32Sentences().where.dtype == "float32"  # the component's default
    sentences = registry.create("compressor", "sentences")
    assert sentences.where.dtype == resolve_precision("auto", "cpu", "auto")  # none: auto
    decoder = registry.create("decoder", "hf", placement={"device": "cpu"})
    assert decoder.where.dtype == resolve_precision("auto", "cpu", "allowed")
    sentences.place(Placement(device="cpu", dtype="bfloat16"))
    assert (sentences.where.device, sentences.where.dtype) == ("cpu", "bfloat16")  # the pipeline's
    own = registry.create("compressor", "sentences", placement={"dtype": "float16"})
    own.place(Placement(device="cpu", dtype="bfloat16"))
    assert (own.where.device, own.where.dtype) == ("cpu", "float16")  # its own setting wins
    with pytest.raises(InvalidArgumentError, match="dtype"):
        Placement(dtype="int3")


def test_chain_and_tiered_pass_wiring_to_their_stages() -> None:
    chain = registry.create("compressor", "chain", stages=[{"name": "sentences"}, "random"])
    chain.place(Placement(device="cpu", dtype="bfloat16"))
    assert [s.where.dtype for s in chain.parts()] == ["bfloat16", "bfloat16"]
    with pytest.raises(InvalidArgumentError, match="extractive"):
        registry.create("compressor", "chain", stages=["sentences", "xrag"])


def test_validation_refuses_bools_nan_and_out_of_range() -> None:
    assert check_int("n", 3, minimum=1) == 3
    for bad in (True, 2.0, "3", 0):
        with pytest.raises(InvalidArgumentError, match="n must be an integer >= 1"):
            check_int("n", bad, minimum=1)
    for bad_number in (math.nan, math.inf, False, "1"):
        with pytest.raises(InvalidArgumentError, match="x must be a finite number"):
            check_number("x", bad_number)
    with pytest.raises(InvalidArgumentError, match=r"\(0, 1\]"):
        check_number("p", 0, above=0, maximum=1)
    with pytest.raises(InvalidArgumentError, match="'a', 'b'"):
        check_choice("c", "z", ("a", "b"))
    with pytest.raises(InvalidArgumentError, match="true or false"):
        check_bool("flag", 1)


def test_atomic_writes_replace_whole_files_or_leave_them(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert oct(target.stat().st_mode & 0o777) == "0o644"

    def failing(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(target, failing)
    assert target.read_text().startswith("{") and os.listdir(tmp_path) == ["f.json"]  # no temp left
    write_atomic(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
