"""Device and dtype selection, decided at run time (never a hard-coded "cuda")."""

from __future__ import annotations

import functools
from typing import Any


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"mps"`` on Apple silicon, else ``"cpu"``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX-512 BF16 units (bf16 matmuls beat fp32 there)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(dtype: str, device: str) -> Any:
    """Map ``"auto" | "float32" | "bfloat16" | "float16"`` to a torch dtype for ``device``.

    ``auto`` picks bf16 on GPUs and on CPUs with AMX/AVX512-BF16, fp32 elsewhere.
    """
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device == "cpu" and cpu_has_fast_bf16() else torch.float32
    try:
        value = getattr(torch, dtype)
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype):
        from ragc.errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"Unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16."
        )
    return value
