"""LlamaIndex's ``LongLLMLinguaPostprocessor`` in LLMLingua-2 mode over local weights, offline.

Why this exists: comparing ragc with LlamaIndex's own LLMLingua-2 postprocessor
(``llama-index-postprocessor-longllmlingua``) needs that postprocessor on the same encoder as
``benchmarks/llmlingua_package.py`` (ragc's packaged MiniLM token classifier, exported by
``export_token_classifier``), on CPU, with nothing downloaded. Its constructor cannot do that:
with ``use_llmlingua2=True`` it asserts ``model_name ==
"microsoft/llmlingua-2-xlm-roberta-large-meetingbank"`` and builds that ``PromptCompressor``
itself (a hub download, ``device_map="cuda"`` by default), and pydantic runs that overridden
``__init__`` from ``model_validate`` too. So :func:`longllmlingua_postprocessor` makes the
object with ``model_construct`` (the fields its ``__init__`` would set, no ``__init__``) and
hands it our compressor in the private ``_llm_lingua`` its ``_postprocess_nodes`` calls.

What the postprocessor then does (0.7.0): it joins the node texts with ``""`` into one string
and calls ``compress_prompt(text, instruction=..., question=query_str, target_token=-1,
rank_method="longllmlingua", **additional_compress_kwargs)``; in LLMLingua-2 mode llmlingua
drops instruction, question and rank_method, so the query plays no part. The rate goes in
``additional_compress_kwargs["rate"]`` (llmlingua's own rule: keep the words above a
percentile of keep probability weighted by tiktoken cl100k tokens, per 510-token chunk). It
returns one node per ``"\\n\\n"``-separated piece of the result (one here): fresh id, no score,
metadata ``{input node id: input metadata}`` for all inputs, excluded from LLM and embed text.

Run from the repository root in the venv ``benchmarks/setup_llmlingua_env.sh`` makes::

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv-llmlingua/bin/python \\
        benchmarks/longllmlingua_adapter.py [--rate 0.33] [--threads 1]

(a small demo: five nodes and a query through ``postprocess_nodes``). TIKTOKEN_CACHE_DIR
defaults to the venv's ``share/tiktoken_cache``, as in ``llmlingua_package.prompt_compressor``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from llmlingua_package import EXPORT_NAME, export_error, export_token_classifier, prompt_compressor

from ragc.compressors.tagger import load_tagger
from ragc.errors import InvalidArgumentError
from ragc.paths import cache_dir

MAX_EXPORT_ERROR = 1e-5  # as llmlingua_package.main: exported softmax vs our sigmoid


def exported_weights() -> Path:
    """The exported classifier folder, written (from the fp32 packaged tagger) if missing."""
    folder = cache_dir() / "bench" / EXPORT_NAME
    if (folder / "config.json").is_file():
        return folder
    tagger = load_tagger("packaged", "cpu", "float32")
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    export_token_classifier(tagger, tmp)
    err = export_error(tagger, tmp)
    if err > MAX_EXPORT_ERROR:
        raise SystemExit(f"The exported classifier differs from our tagger by {err:.2e}; not comparable.")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def longllmlingua_postprocessor(rate: float) -> Any:
    """A ready ``LongLLMLinguaPostprocessor`` (LLMLingua-2 mode) keeping about ``rate`` of the tokens.

    ``rate`` is llmlingua's: 0.33 keeps about a third of the (tiktoken cl100k) tokens. CPU only,
    over the exported local weights (see the module docstring for why not its constructor).
    """
    if not 0 < rate <= 1:
        raise InvalidArgumentError(f"rate must be in (0, 1], got {rate!r}.")
    from llama_index.postprocessor.longllmlingua import LongLLMLinguaPostprocessor

    compressor = prompt_compressor(exported_weights())  # PromptCompressor(folder, use_llmlingua2=True)
    post = LongLLMLinguaPostprocessor.model_construct(
        use_llmlingua2=True, target_token=-1, additional_compress_kwargs={"rate": rate}
    )
    post._llm_lingua = compressor
    return post


DEMO_TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It was designed by "
    "the engineering company of Gustave Eiffel and built between 1887 and 1889. It is 330 metres tall.",
    "The Great Wall of China is a series of fortifications built across the historical northern borders "
    "of ancient Chinese states. Several walls were built from as early as the 7th century BC.",
    "Mount Everest is Earth's highest mountain above sea level, located in the Himalayas. Its elevation "
    "of 8,849 metres was most recently established in 2020 by Chinese and Nepali authorities.",
    "The Amazon River in South America is the largest river by discharge volume of water in the world. "
    "It flows through Peru, Colombia and Brazil before reaching the Atlantic Ocean.",
    "The Colosseum is an elliptical amphitheatre in the centre of Rome, Italy. Construction began under "
    "the emperor Vespasian in AD 72 and was completed in AD 80 under his successor Titus.",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Demo: five nodes through LongLLMLinguaPostprocessor.")
    p.add_argument("--rate", type=float, default=0.33)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--query", default="How tall is the Eiffel Tower?")
    args = p.parse_args(argv)
    import torch
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    post = longllmlingua_postprocessor(args.rate)
    print(f"built {type(post).__name__} in {(time.perf_counter() - t0) * 1e3:.0f} ms")
    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=f"doc-{i}", metadata={"source": f"s{i}"}), score=1.0 - i / 10)
        for i, t in enumerate(DEMO_TEXTS)
    ]
    query = QueryBundle(args.query)
    post.postprocess_nodes(nodes, query)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = post.postprocess_nodes(nodes, query)
        times.append((time.perf_counter() - t0) * 1e3)
    n_in = sum(len(n.node.get_content()) for n in nodes)
    print(
        f"in: {len(nodes)} nodes, {n_in} chars; out: {len(out)} node(s), "
        f"{sum(len(n.node.get_content()) for n in out)} chars; postprocess_nodes ms: "
        + ", ".join(f"{t:.0f}" for t in times)
    )
    for n in out:
        print(f"- id {n.node.node_id} score {n.score} metadata {n.node.metadata}")
        print(f"  excluded_llm_metadata_keys {n.node.excluded_llm_metadata_keys}")
        print(f"  text: {n.node.get_content()!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
