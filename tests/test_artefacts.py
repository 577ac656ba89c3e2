"""One artefact format, one fingerprint recipe, one process-wide model cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ragc import artefacts
from ragc.artefacts import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    checked_fingerprint,
    fingerprint,
    read_config,
    read_weights,
    save_artefact,
)
from ragc.errors import ModelIntegrityError, ModelNotFoundError


def test_save_and_read_round_trip_in_fp16(tmp_path: Path) -> None:
    tensors = {"w": torch.randn(4, 3), "steps": torch.tensor([7])}
    folder = save_artefact(tmp_path / "a", {"format": "test/1", "note": "x"}, tensors)
    meta = read_config(folder, ("test/1",))
    assert meta["note"] == "x" and meta["fingerprint_recipe"] == artefacts.FINGERPRINT_RECIPE
    back = read_weights(folder)
    assert back["w"].dtype == torch.float16 and back["steps"].dtype == torch.int64
    assert torch.allclose(back["w"].float(), tensors["w"], atol=1e-3)
    assert oct((folder / WEIGHTS_FILE).stat().st_mode & 0o777) == "0o644"  # shippable
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no temp files


def test_bad_artefacts_are_refused_with_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="limit"):
        save_artefact(tmp_path / "big", {"format": "t/1"}, {"w": torch.zeros(1024, 1024)}, max_bytes=1024)
    assert not (tmp_path / "big" / CONFIG_FILE).exists()
    folder = save_artefact(tmp_path / "ok", {"format": "t/1"}, {"w": torch.zeros(2)})
    with pytest.raises(ModelIntegrityError, match="expected one of t/2"):
        read_config(folder, ("t/2",))
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="readable JSON"):
        read_config(folder, ("t/1",))
    (folder / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelIntegrityError, match="safetensors"):
        read_weights(folder)
    with pytest.raises(ModelNotFoundError, match="holds no test weights"):
        artefacts.artefact_dir("test", str(tmp_path / "nowhere"), "test weights")


def test_one_fingerprint_recipe_is_dtype_independent_and_content_sensitive() -> None:
    state = {"a.weight": torch.randn(64, 32), "b.bias": torch.randn(32)}
    fp = fingerprint(state)
    assert fp == fingerprint({k: v.to(torch.bfloat16) for k, v in state.items()})
    assert fp != fingerprint({**state, "b.bias": state["b.bias"] + 1})
    assert fp != fingerprint({"renamed": state["a.weight"], "b.bias": state["b.bias"]})
    assert len(fp) == 32


def test_fingerprints_of_an_older_recipe_are_not_compared(recwarn: pytest.WarningsRecorder) -> None:
    assert checked_fingerprint({"fingerprint_recipe": artefacts.FINGERPRINT_RECIPE, "fp": "ab"}, "fp") == "ab"
    with pytest.warns(FutureWarning, match="older fingerprint recipe"):
        assert checked_fingerprint({"fp": "ab"}, "fp") is None


def test_the_model_cache_loads_once_and_releases() -> None:
    calls = []

    def load() -> object:
        calls.append(1)
        return object()

    first = artefacts.shared(("test-kind", "x"), load)
    assert artefacts.shared(("test-kind", "x"), load) is first and len(calls) == 1
    assert artefacts.release("test-kind") == 1
    assert artefacts.shared(("test-kind", "x"), load) is not first and len(calls) == 2
    artefacts.release("test-kind")


def test_packaged_artefacts_carry_current_fingerprints() -> None:
    for folder in [artefacts.packaged_dir("llmlingua2"), *(artefacts.packaged_dir("xrag", d) for d in
                                                           artefacts.packaged_decoders("xrag"))]:
        meta = json.loads((folder / CONFIG_FILE).read_text())
        assert meta["fingerprint_recipe"] == artefacts.FINGERPRINT_RECIPE, folder
