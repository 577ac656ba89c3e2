"""A tiny random decoder for the decoder tests (plumbing only; behaviour tests use SmolLM2)."""

from __future__ import annotations

import pytest
import torch

from ragc.decoders.hf import HFDecoder


@pytest.fixture(scope="session")
def tiny() -> HFDecoder:
    """A 2-layer random Llama sharing SmolLM2's tokenizer (shapes and plumbing only)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragc.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    dec = HFDecoder(model="smollm2-135m", placement={"device": "cpu", "dtype": "float32"}, max_new_tokens=6)
    dec._lm = LlamaForCausalLM(cfg).eval()
    dec._tok = tok
    return dec
