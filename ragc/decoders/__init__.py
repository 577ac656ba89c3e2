"""Decoders: the :class:`~ragc.decoders.base.Decoder` contract and the Hugging Face decoder."""

from ragc.decoders.base import Beam, Decoder, Generation, PrefillInfo
from ragc.decoders.generate import Search
from ragc.decoders.prompt import Prompts

__all__ = ["Beam", "Decoder", "Generation", "PrefillInfo", "Prompts", "Search"]
