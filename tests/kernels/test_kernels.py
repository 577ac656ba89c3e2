"""The torch path of the page kernels equals the reference, and the dispatcher picks as documented.

Awkward shapes (lengths not multiples of the page size, page sizes 1, 5 and 16, left padding
of whole pages, GQA ratios 1, 7 and 8, bf16, strided caches) come from ``kernel_cases``; the
Triton kernels run the same checks in ``test_triton.py``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from kernel_cases import (
    ALL_CASES,
    Case,
    assert_valid_selection,
    check_attention,
    check_meta,
    check_no_valid_position,
    check_padding,
    check_scores,
    check_select,
    check_upper_bound,
    tied_inputs,
)

import ragc.kernels as kernels
from ragc.errors import InvalidArgumentError, MissingDependencyError
from ragc.kernels import (
    page_attention_reference,
    page_attention_torch,
    page_meta_reference,
    page_meta_torch,
    page_select_reference,
    page_select_torch,
)

CPU = torch.device("cpu")
CASES = pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
PROPERTY_CASES = [c for c in ALL_CASES if c.length in (17, 130) and c.dtype == torch.float32]


@CASES
def test_page_meta(case: Case) -> None:
    check_meta(page_meta_torch.page_meta, case)


@CASES
def test_page_scores(case: Case) -> None:
    check_scores(page_select_torch.page_scores, case)


@CASES
def test_page_select(case: Case) -> None:
    check_select(page_select_torch.page_select, case)


@CASES
def test_page_attention(case: Case) -> None:
    check_attention(page_attention_torch.page_attention, case)


@pytest.mark.parametrize("case", PROPERTY_CASES, ids=lambda c: c.id)
def test_score_bounds_every_key(case: Case) -> None:
    check_upper_bound(page_meta_torch.page_meta, page_select_torch.page_scores, case)
    check_upper_bound(page_meta_reference.page_meta, page_select_reference.page_scores, case, seeds=1)


@pytest.mark.parametrize("case", PROPERTY_CASES, ids=lambda c: c.id)
def test_padding_never_matters(case: Case) -> None:
    check_padding(
        page_meta_torch.page_meta, page_select_torch.page_select, page_attention_torch.page_attention, case
    )


def test_ties_go_to_the_lower_page_as_in_the_reference() -> None:
    x = tied_inputs()
    mins, maxs = page_meta_torch.page_meta(x["k"], 5)
    scores = page_select_reference.page_scores(x["q"], mins, maxs)
    for keep in (x["keep"], ~x["keep"]):
        got = page_select_torch.page_select(x["q"], mins, maxs, 3, keep)
        assert_valid_selection(got, scores, keep, 3)
        assert torch.equal(got, page_select_reference.page_select(x["q"], mins, maxs, 3, keep))


def test_no_valid_position_gives_zeros() -> None:
    check_no_valid_position(page_attention_torch.page_attention)
    check_no_valid_position(page_attention_reference.page_attention)


# --- dispatcher ---------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("RAGC_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return monkeypatch


def without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    fake = lambda name, *a: None if name == "triton" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", fake)


def test_default_backend_on_cpu_is_torch(env: pytest.MonkeyPatch) -> None:
    assert kernels.backend(CPU) == "torch"


def test_default_backend_on_cuda_is_triton_when_installed(env: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")  # only the device type is looked at: no GPU needed
    expected = "triton" if importlib.util.find_spec("triton") else "torch"
    assert kernels.backend(cuda) == expected
    without_triton(env)
    assert kernels.backend(cuda) == "torch"


@pytest.mark.parametrize("name", ["reference", "torch", " reference "])
def test_override(env: pytest.MonkeyPatch, name: str) -> None:
    env.setenv("RAGC_KERNELS", name)
    assert kernels.backend(CPU) == name.strip()
    module = importlib.import_module(f"ragc.kernels.page_meta_{name.strip()}")
    env.setattr(module, "page_meta", lambda *args: "called")
    assert kernels.page_meta(torch.zeros(1, 1, 4, 2), 2) == "called"


@pytest.mark.parametrize("name", ["cuda", "Triton", "ref"])
def test_invalid_backend(env: pytest.MonkeyPatch, name: str) -> None:
    env.setenv("RAGC_KERNELS", name)
    with pytest.raises(InvalidArgumentError, match="reference, torch, triton"):
        kernels.backend(CPU)


def test_forced_triton_on_cpu_without_interpreter(env: pytest.MonkeyPatch) -> None:
    env.setenv("RAGC_KERNELS", "triton")
    if importlib.util.find_spec("triton") is not None:
        with pytest.raises(InvalidArgumentError, match=r"no CPU driver.*TRITON_INTERPRET=1"):
            kernels.page_meta(torch.zeros(1, 1, 4, 2), 2)
    without_triton(env)
    with pytest.raises(MissingDependencyError, match=r"ragc\[triton\]"):
        kernels.page_meta(torch.zeros(1, 1, 4, 2), 2)


def test_dispatched_kernels_run_end_to_end(env: pytest.MonkeyPatch) -> None:
    """The three public entry points chain: metadata, selection, attention."""
    case = Case(53, 16, 14, 2, 24)
    from kernel_cases import inputs

    x = inputs(case)
    mins, maxs = kernels.page_meta(x["k"], 16, x["start"])
    pages = kernels.page_select(x["q"], mins, maxs, 3, x["keep"])
    out = kernels.page_attention(x["q"], x["k"], x["v"], pages, 16, x["start"], 24**-0.5)
    assert pages.shape == (3, 2, 3) and out.shape == (3, 14, 24) and out.isfinite().all()
