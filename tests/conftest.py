"""Session-scoped fixtures shared by the whole test suite.

Packaged models load once per session; nothing downloads (HF_HUB_OFFLINE is forced on).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragc.types import Passage  # after the offline switches

CPU32 = {"device": "cpu", "dtype": "float32"}  # fp32 on the CPU: exact, reproducible numbers

# Twelve short passages on unrelated topics, written for the tests. Two are traps:
# "astronauts" shares the words "sleep" and "long" with the cat question but not its
# meaning, and "gasket" holds the rare token "zarnak".
TINY_TEXTS: dict[str, str] = {
    "astronauts": "Astronauts sleep in bags strapped to the wall so that they do not drift along "
    "the long corridors of the space station.",
    "photosynthesis": "Plants turn sunlight, water and carbon dioxide into glucose and oxygen in "
    "their chloroplasts.",
    "vesuvius": "Mount Vesuvius erupted in 79 AD and buried the Roman towns of Pompeii and "
    "Herculaneum under metres of ash.",
    "gasket": "Technicians replaced the Q7-Zarnak gasket after the coolant pump started leaking "
    "during the night shift.",
    "markets": "Shares on the Tokyo exchange fell sharply after the central bank raised interest rates.",
    "cats": "Domestic felines spend most of the day dozing: an adult house cat naps for up to sixteen hours.",
    "bread": "Knead the dough for ten minutes, let it rise until doubled, then bake the loaf at 220 degrees.",
    "telescope": "The James Webb telescope observes infrared light from the earliest galaxies in "
    "the universe.",
    "antibiotics": "Antibiotics kill bacteria but have no effect on viral infections such as the "
    "common cold.",
    "beethoven": "Beethoven composed his ninth symphony while he was almost completely deaf.",
    "amazon": "The Amazon carries more water to the ocean than any other river on Earth.",
    "python": "Python lists are mutable sequences, while tuples cannot be changed after creation.",
}


@pytest.fixture(scope="session")
def tiny_corpus() -> list[Passage]:
    """Twelve hand-written passages on unrelated topics (ids are the keys of TINY_TEXTS)."""
    return [Passage(id=pid, text=text) for pid, text in TINY_TEXTS.items()]


@pytest.fixture(scope="session")
def minilm_dense(tiny_corpus: list[Passage]):  # -> DenseRetriever (import kept lazy)
    """The packaged MiniLM encoder behind an exact (flat) index of ``tiny_corpus``.

    Shared by the session: treat it as read-only (do not re-index it).
    """
    from ragc.retrievers.dense import DenseRetriever

    retriever = DenseRetriever(model="minilm", show_progress=False)
    retriever.index(tiny_corpus)
    return retriever


@pytest.fixture(scope="session")
def smollm():  # -> HFDecoder
    """The packaged SmolLM2-135M decoder (fp32, greedy), loaded once."""
    from ragc.decoders.hf import HFDecoder

    dec = HFDecoder(model="smollm2-135m", placement=CPU32, max_new_tokens=24)
    dec.lm  # load now  # noqa: B018
    return dec


@pytest.fixture(scope="session")
def smol_counter():  # -> TokenCounter
    """Token counter in SmolLM2's tokenizer (no model weights loaded)."""
    from ragc.models import load_tokenizer
    from ragc.tokens import TokenCounter

    return TokenCounter(load_tokenizer("smollm2-135m"), "smollm2-135m")
