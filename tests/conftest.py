"""Session-scoped fixtures: packaged models are loaded once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from ragc.decoder import HFDecoder  # noqa: E402
from ragc.tokens import TokenCounter  # noqa: E402


@pytest.fixture(scope="session")
def smollm() -> HFDecoder:
    """The packaged SmolLM2-135M decoder (fp32, greedy)."""
    dec = HFDecoder(model="smollm2-135m", device="cpu", dtype="float32", max_new_tokens=16)
    dec.lm  # load once  # noqa: B018
    return dec


@pytest.fixture(scope="session")
def smol_counter() -> TokenCounter:
    """Token counter in SmolLM2's tokenizer (no model weights loaded)."""
    from ragc.models import load_tokenizer

    return TokenCounter(load_tokenizer("smollm2-135m"), "smollm2-135m")
