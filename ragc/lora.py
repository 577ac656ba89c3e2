"""Low-rank adapters (Hu et al., 2021) hooked onto a shared model only while in use.

Used by CompLLM's concept encoder and the trained generative retriever: one model instance
in memory serves the plain decoder (adapters off) and the adapted component (adapters on).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ragc.errors import InvalidArgumentError


class LoRA:
    """Low-rank adapters on named linear layers of a model, active only inside ``enabled()``.

    ``with lora.enabled(): ...`` installs one forward hook per target ``nn.Linear`` so that
    ``y = W x + b + s * B(A(x))`` and removes the hooks in ``finally``; outside it the model
    is untouched, so one model instance is both the compressor (LoRA on) and the decoder.
    """

    def __init__(self, model: Any, targets: Sequence[str], rank: int, alpha: float) -> None:
        import torch
        from torch import nn

        if rank < 1:
            raise InvalidArgumentError(f"LoRA rank must be >= 1, got {rank}.")
        self.rank, self.alpha, self.targets = rank, alpha, tuple(targets)
        self.scale = alpha / rank
        self.params = nn.ParameterDict()
        self._modules: list[tuple[Any, str]] = []
        for name, module in list(model.named_modules()):
            if not (isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in self.targets):
                continue
            key = name.replace(".", "__")
            a = nn.Parameter(torch.empty(rank, module.in_features, device=module.weight.device))
            nn.init.kaiming_uniform_(a, a=5**0.5)
            b = nn.Parameter(torch.zeros(module.out_features, rank, device=module.weight.device))
            self.params[f"{key}__A"], self.params[f"{key}__B"] = a, b
            self._modules.append((module, key))
        if not self._modules:
            raise InvalidArgumentError(f"no linear layers named {self.targets} in the model.")

    def _hook(self, key: str) -> Any:
        a, b, scale = self.params[f"{key}__A"], self.params[f"{key}__B"], self.scale

        def hook(mod: Any, inputs: Any, output: Any) -> Any:
            x = inputs[0]
            return output + (x.to(a.dtype) @ a.t() @ b.t() * scale).to(output.dtype)

        return hook

    @contextlib.contextmanager
    def enabled(self) -> Iterator[None]:
        handles = [module.register_forward_hook(self._hook(key)) for module, key in self._modules]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
