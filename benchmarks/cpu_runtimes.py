"""ONNX Runtime and OpenVINO beside torch, for ``benchmarks/cpu_speed.py``.

The packaged MiniLM token classifier and sentence encoder are exported to ONNX as
``(ids, mask) -> output`` modules and run by ONNX Runtime (fp32, and int8 by its dynamic
quantisation) or OpenVINO (fp32, and the int8 ONNX file). ``pip install 'ragc[cpu-runtimes]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ragc.compressors.tagger import Tagger


class Wrapped:
    """A torch module ``(ids, mask) -> output`` exported to ONNX, run by ORT or OpenVINO."""

    def __init__(self, runtime: str, path: Path, threads: int) -> None:
        self.runtime = runtime
        if runtime == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            self.run = lambda ids, mask: sess.run(None, {"ids": ids, "mask": mask})[0]
        else:
            import openvino as ov

            cfg = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
            model = ov.Core().compile_model(str(path), "CPU", cfg)
            self.run = lambda ids, mask: model({"ids": ids, "mask": mask})[0]


def export(module: Any, path: Path, int8: bool) -> Path:
    """``module(ids, mask)`` as ONNX (fp32; int8: ORT dynamic quantisation of its MatMuls)."""
    import torch

    fp32, int8_path = path.parent / f"{path.name}.fp32.onnx", path.parent / f"{path.name}.int8.onnx"
    if not fp32.is_file():
        ids = torch.randint(1000, 2000, (2, 16))
        torch.onnx.export(
            module,
            (ids, torch.ones_like(ids)),
            str(fp32),
            input_names=["ids", "mask"],
            output_names=["out"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"ids": {0: "b", 1: "t"}, "mask": {0: "b", 1: "t"}, "out": {0: "b"}},
        )
    if not int8:
        return fp32
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not int8_path.is_file():
        quantize_dynamic(
            str(fp32),
            str(int8_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    return int8_path


def runtimes_available() -> list[str]:
    if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2":
        return []  # no ISA cap for them: measured in the uncapped pass only
    found = []
    for mod, name in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        try:
            __import__(mod)
            found.append(name)
        except ImportError:
            pass
    return found


class TaggerOnRuntime(Tagger):
    """The packaged tagger's encoder + head, run by ONNX Runtime or OpenVINO."""

    def keep_logits(self, ids: Any, mask: Any) -> Any:
        import torch

        return torch.from_numpy(np.asarray(self.runner.run(ids.numpy(), mask.numpy())))


class TaggerModule:
    @staticmethod
    def of(tagger: Tagger) -> Any:
        import torch

        class M(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.e, self.h = tagger.encoder, tagger.head

            def forward(self, ids: Any, mask: Any) -> Any:
                out = self.h(self.e(input_ids=ids, attention_mask=mask).last_hidden_state)
                return out[..., 0] if out.shape[-1] == 1 else out[..., 1] - out[..., 0]

        return M().eval()


def sentence_module(encoder: Any) -> Any:
    """The sentence encoder as ``(ids, mask) -> normalised mean-pooled embedding``."""
    import torch

    bert = encoder[0].auto_model

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = bert

        def forward(self, ids: Any, mask: Any) -> Any:
            h = self.b(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, dim=-1)

    return M().eval()


def prefill_module(lm: Any) -> Any:
    """A causal LM's prefill as ``(ids, mask) -> last token's logits`` (no KV cache returned:
    ONNX Runtime and OpenVINO are timed on the prefill, the part that sets time to first token)."""
    import torch

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, ids: Any, mask: Any) -> Any:
            out = self.lm(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
            return out.logits[:, -1]

    return M().eval()
