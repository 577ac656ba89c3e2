"""Kernels of KV page retrieval, each as a readable reference, a fast torch path and Triton.

::

    mins, maxs = page_meta(keys, page_size, start)              # (B, H, P, D) each
    pages = page_select(q, mins, maxs, n_pages, keep)           # (B, Hkv, n_pages), -1 unused
    out = page_attention(q, k, v, pages, page_size, start, scale)  # (B, Hq, D)

``<kernel>_reference.py`` is the definition (plain torch, loops where they read best),
``<kernel>_torch.py`` the fast path for CPUs, ``<kernel>_triton.py`` the GPU kernel. The
dispatcher picks Triton for CUDA tensors when ``triton`` is installed and the torch path
otherwise; ``RAGC_KERNELS=reference|torch|triton`` overrides it. Triton runs on a CPU only in
its interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is imported), which the tests
use; without it there is no CPU driver, so the dispatcher never picks Triton for CPU tensors
and a forced ``RAGC_KERNELS=triton`` there is an error saying so.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import TYPE_CHECKING, Any

from ragc.errors import InvalidArgumentError, MissingDependencyError

if TYPE_CHECKING:
    import torch

BACKENDS = ("reference", "torch", "triton")
KERNELS = ("page_meta", "page_select", "page_attention")


def triton_usable(device: torch.device) -> bool:
    """Whether Triton can run kernels on ``device``: CUDA with ``triton`` installed, or any
    device under the interpreter (``TRITON_INTERPRET=1``)."""
    if importlib.util.find_spec("triton") is None:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return device.type == "cuda"


def backend(device: torch.device) -> str:
    """The backend used for tensors on ``device`` (see the module doc)."""
    forced = os.environ.get("RAGC_KERNELS", "").strip()
    if forced:
        if forced not in BACKENDS:
            raise InvalidArgumentError(f"RAGC_KERNELS={forced!r}: use one of {', '.join(BACKENDS)}.")
        if forced == "triton" and not triton_usable(device):
            if importlib.util.find_spec("triton") is None:
                raise MissingDependencyError("RAGC_KERNELS=triton needs triton: pip install 'ragc[triton]'.")
            raise InvalidArgumentError(
                f"RAGC_KERNELS=triton cannot run on {device.type} tensors: Triton has no CPU driver. "
                "Use a CUDA device, TRITON_INTERPRET=1 (tests only: ~1000x slower), or RAGC_KERNELS=torch."
            )
        return forced
    return "triton" if device.type == "cuda" and triton_usable(device) else "torch"


def _impl(kernel: str, device: torch.device) -> Any:
    module = importlib.import_module(f"ragc.kernels.{kernel}_{backend(device)}")
    return getattr(module, kernel)


def page_meta(
    keys: torch.Tensor, page_size: int, start: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-page elementwise min and max of ``keys`` (see :mod:`ragc.kernels.page_meta_reference`)."""
    return _impl("page_meta", keys.device)(keys, page_size, start)  # type: ignore[no-any-return]


def page_select(
    q: torch.Tensor, mins: torch.Tensor, maxs: torch.Tensor, n_pages: int, keep: torch.Tensor
) -> torch.Tensor:
    """The pages each KV head attends to (see :mod:`ragc.kernels.page_select_reference`)."""
    return _impl("page_select", q.device)(q, mins, maxs, n_pages, keep)  # type: ignore[no-any-return]


def page_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pages: torch.Tensor,
    page_size: int,
    start: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Exact attention over the selected pages (see :mod:`ragc.kernels.page_attention_reference`)."""
    return _impl("page_attention", q.device)(q, k, v, pages, page_size, start, scale)  # type: ignore[no-any-return]


__all__ = ["BACKENDS", "KERNELS", "backend", "page_attention", "page_meta", "page_select", "triton_usable"]
