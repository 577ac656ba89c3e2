"""Precision (``dtype``) resolution and the process's CPU threads (int8 itself: test_quantize.py)."""

from __future__ import annotations

import os

import pytest
import torch

from ragc import device, registry
from ragc.device import Placement, configure_threads, resolve_precision, set_threads, usable_cpus
from ragc.errors import InvalidArgumentError


def _cpu_bf16(monkeypatch: pytest.MonkeyPatch, value: str):  # -> Iterator[None]
    monkeypatch.setenv("RAGC_FAST_BF16", value)
    device.cpu_bf16.cache_clear()
    yield
    device.cpu_bf16.cache_clear()


@pytest.fixture
def no_fast_bf16(monkeypatch: pytest.MonkeyPatch):  # -> Iterator[None]
    """An AVX2-only CPU, whatever this machine has."""
    yield from _cpu_bf16(monkeypatch, "0")


@pytest.fixture
def fast_bf16(monkeypatch: pytest.MonkeyPatch):  # -> Iterator[None]
    """A CPU with AMX."""
    yield from _cpu_bf16(monkeypatch, "1")


@pytest.fixture
def avx512_bf16(monkeypatch: pytest.MonkeyPatch):  # -> Iterator[None]
    """A CPU with AVX512-BF16 and no AMX."""
    yield from _cpu_bf16(monkeypatch, "avx512")


def test_auto_takes_int8_only_for_components_measured_to_keep_results(no_fast_bf16: None) -> None:
    assert resolve_precision("auto", "cpu", int8="auto") == "int8"
    assert resolve_precision("auto", "cpu", int8="allowed") == "float32"
    assert resolve_precision("auto", "cpu") == "float32"
    assert resolve_precision("int8", "cpu", int8="allowed") == "int8"
    assert registry.create("compressor", "llmlingua2").where.dtype == "int8"
    assert registry.create("compressor", "sentences").where.dtype == "int8"
    assert registry.create("retriever", "dense").where.dtype == "float32"


def test_auto_prefers_bf16_where_the_cpu_has_amx(fast_bf16: None) -> None:
    assert resolve_precision("auto", "cpu", int8="auto") == "bfloat16"
    assert resolve_precision("auto", "cpu", int8="allowed") == "bfloat16"
    assert resolve_precision("float32", "cpu", int8="auto") == "float32"


def test_avx512_bf16_takes_bf16_like_amx(avx512_bf16: None) -> None:
    """bf16 matched or beat int8 on the encoders there, closer to fp32 (cpu_speed.md)."""
    assert resolve_precision("auto", "cpu", int8="auto") == "bfloat16"
    assert resolve_precision("auto", "cpu", int8="allowed") == "bfloat16"
    assert resolve_precision("auto", "cpu", int8="never") == "bfloat16"


def test_the_cpu_flags_name_the_bf16_units() -> None:
    assert device.bf16_units("flags\t: fpu avx2 fma") == ""
    assert device.bf16_units("flags : avx2 avx512f avx512_bf16 avx512_vnni") == "avx512"
    assert device.bf16_units("flags : avx512_bf16 amx_bf16 amx_tile amx_int8") == "amx"
    assert device.bf16_units("flags : avx512_bf16x") == ""  # whole flag names only


def test_int8_is_refused_off_the_cpu_and_by_components_without_an_int8_path() -> None:
    with pytest.raises(InvalidArgumentError, match="CPU only"):
        resolve_precision("int8", "cuda", int8="allowed")
    with pytest.raises(InvalidArgumentError, match="no int8 path"):
        resolve_precision("int8", "cpu", int8="never")
    xrag = registry.create("compressor", "xrag", placement={"device": "cpu", "dtype": "int8"})
    with pytest.raises(InvalidArgumentError, match="no int8 path"):
        _ = xrag.where
    with pytest.raises(InvalidArgumentError, match="dtype"):
        Placement(dtype="int4")


def test_a_bad_override_of_the_cpu_detection_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGC_FAST_BF16", "yes")
    device.cpu_bf16.cache_clear()
    try:
        with pytest.raises(InvalidArgumentError, match="RAGC_FAST_BF16"):
            device.cpu_has_fast_bf16()
    finally:
        monkeypatch.delenv("RAGC_FAST_BF16")
        device.cpu_bf16.cache_clear()


def test_threads_are_capped_by_the_cpus_the_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "_THREADS", [])
        monkeypatch.setattr(device, "usable_cpus", lambda: 1)
        assert configure_threads() == 1 == torch.get_num_threads()
        assert configure_threads() == 1  # settled once
        monkeypatch.setattr(device, "_THREADS", [])
        monkeypatch.setenv("RAGC_THREADS", "zero")
        with pytest.raises(InvalidArgumentError, match="RAGC_THREADS"):
            configure_threads()
        with pytest.raises(InvalidArgumentError, match="threads"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
