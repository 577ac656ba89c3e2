"""Where models run: :class:`Placement` (device and dtype), decided at run time.

Never a hard-coded ``"cuda"``: ``device=None`` picks :func:`default_device` when the model is
loaded, and ``dtype="auto"`` picks by what the hardware runs fastest (bf16 on GPUs and on
CPUs with AMX or AVX512-BF16 units, fp32 on other CPUs).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

from ragc.errors import InvalidArgumentError
from ragc.settings import Settings

DTYPES = ("auto", "float32", "bfloat16", "float16")


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
    """Map ``"auto" | "float32" | "bfloat16" | "float16"`` to a torch dtype for ``device``."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device == "cpu" and cpu_has_fast_bf16() else torch.float32
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"Unknown dtype {dtype!r}; use {', '.join(DTYPES)}.")
    return getattr(torch, dtype)


@dataclass(frozen=True)
class Placement(Settings):
    """The device and dtype a component's model runs in.

    The pipeline supplies one placement to all its components (config key ``placement``); a
    component's own ``placement`` overrides it setting by setting. A bare string is a device.

    Parameters:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None``: :func:`default_device`.
        dtype: ``"auto"`` (see the module doc), ``"float32"``, ``"bfloat16"`` or ``"float16"``;
            ``None``: inherited (``"auto"`` at the end).
    """

    shorthand: ClassVar[str] = "device"
    flat_keys: ClassVar[dict[str, str]] = {"device": "device", "dtype": "dtype"}
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.device is not None and (not isinstance(self.device, str) or not self.device.strip()):
            raise InvalidArgumentError(f"device must be a name like 'cpu' or 'cuda:0', got {self.device!r}.")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise InvalidArgumentError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")

    def over(self, base: Placement | None) -> Placement:
        """This placement, with the settings it leaves open taken from ``base``."""
        if base is None:
            return self
        return Placement(self.device or base.device, self.dtype or base.dtype)

    def resolve(self) -> Where:
        """The concrete placement: the device picked and ``auto`` turned into a dtype."""
        device = self.device or default_device()
        dtype = str(resolve_dtype(self.dtype or "auto", device)).removeprefix("torch.")
        return Where(device, dtype)


@dataclass(frozen=True)
class Where:
    """A resolved :class:`Placement`: a device name and a dtype name (``"float32"``, ...)."""

    device: str
    dtype: str

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)


class Placed:
    """Mixin of components whose model runs somewhere (dataclasses with a ``placement`` field).

    ``place(p)`` is how the pipeline supplies its placement; :attr:`where` is the concrete
    placement the component uses, setting by setting: its own ``placement``, else the
    supplied one, else the component's ``default_placement``, else ``auto``.
    """

    placement: Any = None
    default_placement: ClassVar[Placement] = Placement()
    _supplied: Placement | None = None

    def place(self, placement: Placement | None) -> None:
        """Use ``placement`` for every setting the component's own ``placement`` leaves open."""
        self._supplied = placement

    @property
    def where(self) -> Where:
        own = Placement.parse(self.placement)
        return own.over(self._supplied).over(self.default_placement).resolve()
