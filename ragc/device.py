"""Where models run: :class:`Placement` (device and precision), decided at run time.

Never a hard-coded ``"cuda"``: ``device=None`` picks :func:`default_device` when the model is
loaded, and ``dtype="auto"`` picks what the hardware runs fastest without changing results
beyond the tolerance measured in ``benchmarks/results/cpu_speed.md``: bf16 on GPUs and on CPUs
with bf16 units (AMX or AVX512-BF16); on other CPUs int8 (:mod:`ragc.quantize`) for the
components whose int8 results were measured to agree with fp32 (``int8 = "auto"``), else fp32.
``RAGC_FAST_BF16`` overrides the CPU detection (:func:`cpu_bf16`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ragc.errors import InvalidArgumentError
from ragc.settings import Settings

DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
#: How a component takes ``int8``: picked by ``auto`` on CPUs without fast bf16, taken only
#: when asked, or refused (its model has no int8 path, or int8 was measured to change results).
INT8_POLICIES = ("auto", "allowed", "never")


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"mps"`` on Apple silicon, else ``"cpu"``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.cache
def cpu_bf16() -> str:
    """The CPU's bf16 units: ``"amx"`` (AMX tiles), ``"avx512"`` (AVX512-BF16 dot products;
    bf16 still beats or matches int8 on the MiniLM encoders there, and keeps results closer to
    fp32) or ``""`` (none: bf16 is emulated, several times slower than fp32).
    ``benchmarks/results/cpu_speed.md`` measures it.

    ``RAGC_FAST_BF16`` overrides what ``/proc/cpuinfo`` says (containers and VMs can hide CPU
    flags): ``0`` (no bf16 units), ``1`` or ``amx``, ``avx512``.
    """
    forced = os.environ.get("RAGC_FAST_BF16", "").strip().lower()
    if forced:
        units = {"0": "", "1": "amx", "amx": "amx", "avx512": "avx512"}
        if forced not in units:
            raise InvalidArgumentError(f"RAGC_FAST_BF16 must be 0, 1, amx or avx512, got {forced!r}.")
        return units[forced]
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return bf16_units(next((line for line in f if line.startswith("flags")), ""))
    except OSError:
        return ""


def bf16_units(flags: str) -> str:
    """:func:`cpu_bf16` of a ``/proc/cpuinfo`` flags line."""
    names = set(flags.split())
    return "amx" if "amx_bf16" in names else "avx512" if "avx512_bf16" in names else ""


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 units (AMX or AVX512-BF16): bf16 matmuls beat fp32 there."""
    return bool(cpu_bf16())


def resolve_precision(dtype: str, device: str, int8: str = "never") -> str:
    """``"float32" | "bfloat16" | "float16" | "int8"``: what ``dtype`` means on ``device``.

    ``int8`` is one of :data:`INT8_POLICIES`: the component's way of taking int8.
    """
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"Unknown dtype {dtype!r}; use {', '.join(DTYPES)}.")
    if dtype == "auto":
        import torch

        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if device != "cpu":
            return "float32"
        if cpu_bf16():
            return "bfloat16"
        return "int8" if int8 == "auto" else "float32"
    if dtype == "int8":
        if int8 == "never":
            raise InvalidArgumentError(
                "this component has no int8 path (dtype 'int8'); give it its own placement dtype "
                "(float32, bfloat16 or auto)."
            )
        if device != "cpu":
            raise InvalidArgumentError(
                f"dtype 'int8' (dynamic quantisation) runs on the CPU only, not on {device!r}."
            )
    return dtype


def resolve_dtype(dtype: str, device: str, int8: str = "never") -> Any:
    """The torch dtype a model's weights are loaded in (``int8``: fp32, then quantised)."""
    import torch

    precision = resolve_precision(dtype, device, int8)
    return torch.float32 if precision == "int8" else getattr(torch, precision)


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(n, quota)) if quota else n


def _cgroup_cpu_quota() -> int | None:
    """Whole CPUs of the cgroup's quota (v2 ``cpu.max``, v1 ``cfs_quota_us``), None if unlimited."""
    v1 = Path("/sys/fs/cgroup/cpu")
    for quota, period in (
        (Path("/sys/fs/cgroup/cpu.max"), None),
        (v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us"),
    ):
        try:
            fields = quota.read_text(encoding="ascii").split()
            if period is not None:
                fields = fields[:1] + period.read_text(encoding="ascii").split()[:1]
        except OSError:
            continue
        if len(fields) < 2 or fields[0] in ("max", "-1"):
            return None
        try:
            return max(1, int(fields[0]) // max(1, int(fields[1])))
        except ValueError:
            return None
    return None


_THREADS: list[int] = []  # the intra-op thread count this process settled on (set once)


def set_threads(n: int) -> None:
    """Run CPU forwards on ``n`` intra-op threads (torch's pool, shared by every component)."""
    import torch

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidArgumentError(f"threads must be a positive integer, got {n!r}.")
    torch.set_num_threads(n)
    _THREADS[:] = [n]


def configure_threads() -> int:
    """Settle the process's intra-op threads once, before its first CPU forward.

    ``RAGC_THREADS`` if set; else torch's default (one per physical core) capped by
    :func:`usable_cpus`, so a container with a 2-CPU quota on a 64-core host runs 2 threads,
    not 64. Left alone after :func:`set_threads` or when ``OMP_NUM_THREADS`` is set. All
    components of a process share this one pool (they run one after another), so a
    compressor and the decoder in one pipeline never oversubscribe the CPUs.
    """
    import torch

    if _THREADS:
        return _THREADS[0]
    env = os.environ.get("RAGC_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise InvalidArgumentError(f"RAGC_THREADS must be a positive integer, got {env!r}.")
        set_threads(int(env))
    elif os.environ.get("OMP_NUM_THREADS"):
        _THREADS[:] = [torch.get_num_threads()]
    else:
        set_threads(max(1, min(torch.get_num_threads(), usable_cpus())))
    return _THREADS[0]


@dataclass(frozen=True)
class Placement(Settings):
    """The device and dtype a component's model runs in.

    The pipeline supplies one placement to all its components (config key ``placement``); a
    component's own ``placement`` overrides it setting by setting. A bare string is a device.

    Parameters:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None``: :func:`default_device`.
        dtype: the precision: ``"auto"`` (see the module doc), ``"float32"``, ``"bfloat16"``,
            ``"float16"`` or ``"int8"`` (Linear layers in int8, CPU only, for the components
            that have an int8 path); ``None``: inherited (``"auto"`` at the end).
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

    def resolve(self, int8: str = "never") -> Where:
        """The concrete placement: the device picked and ``auto`` turned into a precision.

        ``int8`` is the component's :data:`INT8_POLICIES` entry.
        """
        device = self.device or default_device()
        if device == "cpu":
            configure_threads()
        return Where(device, resolve_precision(self.dtype or "auto", device, int8))


@dataclass(frozen=True)
class Where:
    """A resolved :class:`Placement`: a device name and a precision (``"float32"``, ``"int8"``...)."""

    device: str
    dtype: str

    @property
    def int8(self) -> bool:
        return self.dtype == "int8"

    @property
    def torch_dtype(self) -> Any:
        """The dtype the weights are loaded in (fp32 for int8, quantised after loading)."""
        import torch

        return torch.float32 if self.int8 else getattr(torch, self.dtype)


class Placed:
    """Mixin of components whose model runs somewhere (dataclasses with a ``placement`` field).

    ``place(p)`` is how the pipeline supplies its placement; :attr:`where` is the concrete
    placement the component uses, setting by setting: its own ``placement``, else the
    supplied one, else the component's ``default_placement``, else ``auto``.
    """

    placement: Any = None
    default_placement: ClassVar[Placement] = Placement()
    #: How this component takes ``int8`` (:data:`INT8_POLICIES`).
    int8: ClassVar[str] = "never"
    _supplied: Placement | None = None

    def place(self, placement: Placement | None) -> None:
        """Use ``placement`` for every setting the component's own ``placement`` leaves open."""
        self._supplied = placement

    @property
    def where(self) -> Where:
        own = Placement.parse(self.placement)
        return own.over(self._supplied).over(self.default_placement).resolve(self.int8)
