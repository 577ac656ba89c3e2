"""int8 on the CPU: Linear layers with int8 weights and per-token int8 activations.

:class:`Int8Linear` is a W8A8 Linear layer (SmoothQuant, Xiao et al. 2023, with the
per-token activation scales of LLM.int8()/ZeroQuant):

- weights: int8 per output channel, in **7 bits** (|q| <= 63). CPUs without VNNI multiply
  u8 activations by s8 weights with ``vpmaddubsw``, which sums pairs into int16: 255*127*2
  overflows it, 255*63*2 does not. With 7-bit weights the activations get all 8 bits on every
  x86 CPU (PyTorch's own dynamic quantisation gives activations 7 bits instead, and one scale
  per tensor);
- activations: per token (row), asymmetric: each token's own min..max is mapped onto 0..255,
  so a token with huge activations (Qwen2's attention sinks) does not crush the others'
  resolution, and a one-sided token (after GELU) uses every code;
- smoothing: with calibration statistics (per input channel absmax, :func:`calibrate`), each
  input channel j is divided by ``s_j = max|X_j|**alpha / max|W_j|**(1-alpha)`` and the
  weights multiplied by it, moving channel outliers from the activations into the weights;
- the product accumulates in int32 in fbgemm's kernels (AVX2, AVX-512, VNNI) behind
  ``torch.ops.quantized.linear_dynamic``; rows are processed in blocks that stay in cache.

Embeddings, norms and attention's softmax stay in fp32. :func:`quantize_model` swaps a
model's Linear layers in place; :func:`calibration` computes the statistics once per model
(on the bundled demo passages) and keeps them in ``<cache>/int8/``. How much accuracy each
component keeps, and why ONNX Runtime and OpenVINO are not used, is measured in
``benchmarks/results/cpu_speed.md`` and explained in ``docs/cpu.md``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ragc.errors import InvalidArgumentError, MissingDependencyError

#: Largest weight code: 7 bits, so 8-bit activations cannot overflow AVX2's int16 pair sums.
WEIGHT_QMAX = 63
#: SmoothQuant's migration strength: how much of a channel's range moves into the weights.
ALPHA = 0.5
#: Rows per block: a block's activations stay in the CPU's cache across the scale passes.
BLOCK_ROWS = 1024
#: Bump when the statistics' recipe changes (cached statistics of other versions are ignored).
CALIBRATION_VERSION = 1


def _engine() -> None:
    """Select fbgemm (x86) for the int8 kernels, or fail with what to do instead."""
    engines = torch.backends.quantized.supported_engines
    if not hasattr(torch.ops.quantized, "linear_dynamic") or "fbgemm" not in engines:
        raise MissingDependencyError(
            f"dtype 'int8' needs torch's fbgemm int8 kernels (x86 CPUs); this torch {torch.__version__} "
            f"has the engines {engines}. Use dtype 'float32' or 'auto'."
        )
    if torch.backends.quantized.engine not in ("fbgemm", "x86"):
        torch.backends.quantized.engine = "fbgemm"


class Int8Linear(torch.nn.Module):
    """A ``torch.nn.Linear`` in int8: 7-bit weights per output channel, 8-bit asymmetric
    activations per token, optional SmoothQuant channel smoothing (see the module doc).

    Parameters:
        linear: the fp32 layer to quantise (its weights are read, not kept).
        smooth: per input channel divisors ``s`` (``[in_features]``), or ``None``.
    """

    inv_smooth: torch.Tensor | None
    weight_sums: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: torch.nn.Linear, smooth: torch.Tensor | None = None) -> None:
        super().__init__()
        _engine()
        w = linear.weight.detach().float()  # (N, K)
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        inv = None
        if smooth is not None:
            smooth = smooth.detach().float().reshape(-1)
            if smooth.shape[0] != self.in_features or not bool((smooth > 0).all()):
                raise InvalidArgumentError(
                    f"smoothing factors must be {self.in_features} positive numbers, "
                    f"got shape {tuple(smooth.shape)}."
                )
            w = w * smooth[None, :]
            inv = (1.0 / smooth).contiguous()
        self.register_buffer("inv_smooth", inv)
        scale = (w.abs().amax(1) / WEIGHT_QMAX).clamp(min=1e-12)  # (N,)
        codes = torch.round(w / scale[:, None]).clamp_(-WEIGHT_QMAX, WEIGHT_QMAX)
        # Row sums of the int8 weights as they multiply: the term each token's offset adds.
        self.register_buffer("weight_sums", (codes * scale[:, None]).sum(1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch announces the quantized tensor API's move
            zero = torch.zeros(self.out_features, dtype=torch.long)
            qw = torch.quantize_per_channel(codes * scale[:, None], scale.double(), zero, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qw, None)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def extra_repr(self) -> str:
        smooth = self.inv_smooth is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, smooth={smooth}"

    def _rows(self, x: torch.Tensor) -> torch.Tensor:  # (R, K) -> (R, N)
        if self.inv_smooth is not None:
            x = x * self.inv_smooth
        # (R, 1) each: one range per token (amax and amin: aminmax is ~20x slower on CPUs)
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
        span = (hi - lo).clamp_(min=1e-30)
        inv = span.reciprocal()
        # u = (x - lo) / span in [0, 1]; the kernel quantises over the block's min..max, and a
        # last row of 0 and 1 fixes that to [0, 1]: a token's codes depend on that token only.
        unit = x.new_empty(x.shape[0] + 1, x.shape[1])
        torch.addcmul(-lo * inv, x, inv, out=unit[:-1])
        unit[-1].zero_()
        unit[-1, -1] = 1.0
        y = torch.ops.quantized.linear_dynamic(unit, self._packed, False)[:-1]  # (R, N) = W u
        y.mul_(span).addr_(lo.reshape(-1), self.weight_sums)  # W x = span * W u + lo * W 1
        return y if self.bias is None else y.add_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features).float()
        if rows.shape[0] <= BLOCK_ROWS:
            return self._rows(rows).reshape(*lead, self.out_features)
        out = rows.new_empty(rows.shape[0], self.out_features)
        for xs, ys in zip(rows.split(BLOCK_ROWS), out.split(BLOCK_ROWS)):
            ys.copy_(self._rows(xs))
        return out.reshape(*lead, self.out_features)


def linear_names(model: Any, keep_fp32: Sequence[str] = ()) -> list[str]:
    """Names of ``model``'s ``torch.nn.Linear`` layers, less those whose last name part is in
    ``keep_fp32`` (``"lm_head"`` matches ``lm_head``, ``"down_proj"`` every layer's)."""
    return [
        name
        for name, m in model.named_modules()
        if type(m) is torch.nn.Linear and name.rpartition(".")[2] not in keep_fp32
    ]


def smoothing(act_absmax: Any, weight: Any, alpha: float = ALPHA) -> Any:
    """SmoothQuant's per input channel divisors ``max|X_j|**alpha / max|W_j|**(1-alpha)``."""
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError(f"alpha must be in [0, 1], got {alpha!r}.")
    a = act_absmax.float().clamp(min=1e-5)
    w = weight.detach().float().abs().amax(0).clamp(min=1e-5)
    return (a.pow(alpha) / w.pow(1.0 - alpha)).clamp(min=1e-5)


def calibrate(model: Any, run: Callable[[], Any], names: Sequence[str]) -> dict[str, Any]:
    """Per input channel absmax of each named Linear's input while ``run()`` runs the model.

    The hooks are removed when ``run`` returns or raises.
    """
    stats: dict[str, Any] = {}
    modules = dict(model.named_modules())

    def hook(name: str) -> Callable[..., None]:
        def record(_: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            m = x.reshape(-1, x.shape[-1]).abs().amax(0).float()
            stats[name] = torch.maximum(stats[name], m) if name in stats else m

        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in stats]
    if missing:
        raise InvalidArgumentError(f"calibration never ran {len(missing)} layers, e.g. {missing[0]!r}.")
    return stats


def quantize_model(
    model: Any, keep_fp32: Sequence[str] = (), stats: dict[str, Any] | None = None, alpha: float = ALPHA
) -> Any:
    """``model`` with its Linear layers (less ``keep_fp32``) replaced by :class:`Int8Linear`, in
    place; ``stats`` (from :func:`calibrate`) turns on smoothing for the layers it covers."""
    _engine()
    names = linear_names(model, keep_fp32)
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        linear = getattr(owner, child)
        smooth = smoothing(stats[name], linear.weight, alpha) if stats and name in stats else None
        setattr(owner, child, Int8Linear(linear, smooth))
    return model.eval()


def calibration(
    model: Any, kind: str, run: Callable[[], Any], keep_fp32: Sequence[str] = ()
) -> dict[str, Any]:
    """:func:`calibrate` on ``model``, computed once and kept in ``<cache>/int8/``.

    The file is keyed by ``kind``, the weights' fingerprint and :data:`CALIBRATION_VERSION`;
    a damaged or mismatched file is computed again and replaced.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from ragc.artefacts import fingerprint
    from ragc.io import write_with
    from ragc.paths import cache_dir

    names = linear_names(model, keep_fp32)
    ident = json.dumps([kind, fingerprint(model.state_dict()), CALIBRATION_VERSION, names])
    path = cache_dir() / "int8" / f"{kind}-{hashlib.sha256(ident.encode()).hexdigest()[:24]}.safetensors"
    if path.is_file():
        try:
            stats = load_file(str(path))
            if sorted(stats) == sorted(names):
                return stats
        except (OSError, SafetensorError):
            pass
        print(
            f"[ragc] int8 calibration file {path} does not match the model; computing it again",
            file=sys.stderr,
        )
    print(f"[ragc] int8: measuring {kind} activations once (kept in {path.parent})", file=sys.stderr)
    stats = calibrate(model, run, names)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda p: save_file({k: v.contiguous() for k, v in stats.items()}, str(p)))
    return stats


def calibration_texts() -> list[str]:
    """The bundled demo passages: the text every model is calibrated on (no SQuAD dev, which
    the accuracy is measured on)."""
    from ragc.paths import PACKAGE_DATA

    lines = (PACKAGE_DATA / "demo_corpus.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def linear_count(model: Any) -> tuple[int, int]:
    """``(int8 Linear layers, fp32 Linear layers)`` in ``model`` (tests and reports)."""
    mods = list(model.modules())
    return sum(isinstance(m, Int8Linear) for m in mods), sum(type(m) is torch.nn.Linear for m in mods)
