"""int8 on the CPU: PyTorch dynamic quantisation of a model's ``Linear`` layers.

Weights are stored in int8 (one scale per output channel) once, when the model is loaded;
activations are quantised per batch at run time and the products accumulate in int32
(fbgemm's AVX2 / AVX-512 VNNI kernels, oneDNN's on other CPUs). Everything that is not a
``Linear`` (embeddings, norms, attention's softmax) stays in fp32. No calibration data and no
extra dependency: it ships with torch. Why this runtime and not ONNX Runtime or OpenVINO, and
how much accuracy it keeps, is measured in ``benchmarks/results/cpu_speed.md`` and
explained in ``docs/cpu.md``.

A quantised model is cached per process with the fp32 one it came from
(:func:`ragc.artefacts.shared`), so quantisation (a few seconds for the 0.5B decoder) runs
once.
"""

from __future__ import annotations

import warnings
from typing import Any

from ragc.errors import MissingDependencyError

# Causal LMs keep these Linear layers in fp32. ``down_proj`` reads the SwiGLU product, whose
# few huge activations make a per-batch int8 scale crush the rest; ``lm_head`` picks the token.
# Teacher-forced on the packaged Qwen2.5-0.5B, quantising them too drops top-1 agreement with
# fp32 from ~0.86 to ~0.63 (docs/cpu.md).
CAUSAL_LM_FP32 = ("down_proj", "lm_head")


def quantize_linear(model: Any, keep_fp32: tuple[str, ...] = ()) -> Any:
    """``model`` with its ``torch.nn.Linear`` layers replaced by dynamic int8 ones (in place).

    ``keep_fp32`` names layers to leave in fp32: a module whose last dotted name part is one of
    them (``"down_proj"`` matches ``model.layers.3.mlp.down_proj``) is not quantised.

    Raises :class:`~ragc.errors.MissingDependencyError` when this torch has no dynamic quantisation.
    """
    import torch

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as e:  # removed from torch in favour of torchao
        raise MissingDependencyError(
            f"dtype 'int8' needs torch's dynamic quantisation (torch.ao.quantization), which torch "
            f"{torch.__version__} does not have; use dtype 'float32' or 'auto'."
        ) from e
    engines = torch.backends.quantized.supported_engines
    # "x86" picks fbgemm or oneDNN per layer shape; fbgemm where "x86" is missing (older torch).
    engine = next((e for e in ("x86", "fbgemm", "qnnpack") if e in engines), None)
    if engine is None:
        raise MissingDependencyError(
            f"this torch build has no int8 CPU engine (it has {engines}); use dtype 'float32'."
        )
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        # torch.ao's eager API warns that it moves to torchao; it is what torch ships today.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        # Per output channel weight scales: per-tensor ones cost the decoder answers.
        spec: dict[Any, Any] = {
            name: per_channel_dynamic_qconfig
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rpartition(".")[2] not in keep_fp32
        }
        return quantize_dynamic(model.eval(), spec, dtype=torch.qint8, inplace=True)


def linear_count(model: Any) -> tuple[int, int]:
    """``(int8 Linear layers, fp32 Linear layers)`` in ``model`` (tests and reports)."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    mods = list(model.modules())
    return sum(isinstance(m, QLinear) for m in mods), sum(type(m) is torch.nn.Linear for m in mods)
