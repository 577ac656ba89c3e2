"""Shard workers: each holds its models for the whole job and turns one shard into files.

A worker is a callable class (what Ray Data's actor pools want): built once from a JSON-able
``settings`` dict, then called with batches of shards. :meth:`ShardWorker.run_safe` is the
same entry for the local engine. A shard that raises becomes an ``error`` result naming it,
so the other shards of the job still run.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ragc.engines.jobs import mark_finished, shard_stem
from ragc.engines.pieces import Piece, read_piece
from ragc.io import write_with
from ragc.types import Passage


class ShardWorker(ABC):
    """Base: ``settings`` holds ``out`` (the job folder) and ``threads``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        if settings.get("threads"):  # Ray actors: their share of the CPUs (local: the process's)
            from ragc.device import set_threads

            set_threads(int(settings["threads"]))
        self.settings = settings
        self.out = Path(settings["out"]) if settings.get("out") else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [self.run_safe(int(n), json.loads(str(p))) for n, p in zip(batch["n"], batch["piece"])]
        return {"result": np.array([json.dumps(r) for r in results], dtype=object)}

    def run_safe(self, n: int, piece: dict[str, Any]) -> dict[str, Any]:
        """Run one shard: ``{"piece": n, ...}``, or ``{"piece": n, "error": ...}`` if it failed."""
        t0 = time.perf_counter()
        try:
            result = self.run(n, piece)
        except Exception as e:  # reported by name after the other shards ran
            name = Piece.from_dict(piece["corpus"]).name if "corpus" in piece else f"shard {n}"
            return {"piece": n, "error": f"{name}: {' '.join(str(e).split()) or type(e).__name__}"}
        return {"piece": n, "pid": os.getpid(), "seconds": time.perf_counter() - t0, **result}

    @abstractmethod
    def run(self, n: int, piece: dict[str, Any]) -> dict[str, Any]: ...


def piece_passages(piece: dict[str, Any]) -> tuple[list[Passage], list[str]]:
    """The passages of a corpus piece, and where the empty ones were (skipped)."""
    records = read_piece(Piece.from_dict(piece["corpus"]), **piece.get("fields", {}))
    kept = [r.passage for r in records if r.passage.text.strip()]
    return kept, [r.where for r in records if not r.passage.text.strip()]


def write_passages_parquet(path: Path, passages: list[Passage], **columns: list[Any]) -> None:
    """Passages (id, title, text, metadata as JSON) plus extra ``columns`` as one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": [p.id for p in passages],
            "title": [p.title for p in passages],
            "text": [p.text for p in passages],
            "metadata": [json.dumps(p.metadata, ensure_ascii=False, sort_keys=True) for p in passages],
            **columns,
        }
    )
    write_with(path, lambda tmp: pq.write_table(table, str(tmp)))


def read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()  # type: ignore[no-any-return]


def passage_of(row: dict[str, Any]) -> Passage:
    return Passage(id=row["id"], text=row["text"], title=row["title"], metadata=json.loads(row["metadata"]))


class EmbedWorker(ShardWorker):
    """The passages of a corpus piece (``part-N.parquet``) and, with ``settings["dense"]``,
    their dense embeddings (``part-N.safetensors``: ``vectors``, float32, L2-normalised)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        from ragc.retrievers.dense import DenseRetriever

        dense = settings.get("dense")
        self.dense = DenseRetriever(**dense, show_progress=False) if dense else None
        if self.dense is not None:
            self.dense.encoder()  # load now: a broken model fails the worker once, not every shard

    def run(self, n: int, piece: dict[str, Any]) -> dict[str, Any]:
        from safetensors.numpy import save_file

        from ragc.types import indexed_text

        assert self.out is not None
        passages, skipped = piece_passages(piece)
        stem = shard_stem(self.out, n)
        info: dict[str, Any] = {"rows": len(passages), "skipped": skipped}
        if self.dense is not None:
            if passages:
                vectors = self.dense.embed([indexed_text(p) for p in passages], queries=False)
            else:
                vectors = np.zeros((0, 0), dtype=np.float32)
            write_with(
                stem.with_suffix(".safetensors"), lambda tmp: save_file({"vectors": vectors}, str(tmp))
            )
            info["dimension"] = int(vectors.shape[1])
        write_passages_parquet(stem.with_suffix(".parquet"), passages)
        mark_finished(self.out, n, info)
        return info


class CompressWorker(ShardWorker):
    """Query-blind compression of a corpus piece, passage by passage, to ``part-N.parquet``:
    the passage, its compressed text (``None`` for soft output, whose embeddings go to the
    segment cache) and its source / kept token counts in the decoder's tokenizer."""

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        from ragc import registry
        from ragc.cache import SegmentCache

        self.compressor = registry.create("compressor", settings["compressor"], **settings["options"])
        decoder = registry.create("decoder", "hf", model=settings["decoder"])
        self.compressor.bind(decoder.token_counter)
        if settings.get("cache_dir"):
            self.compressor.use_cache(SegmentCache(settings["cache_dir"]))
        self.compressor.prepare()  # load the model now, not in the first shard
        self.budget = settings["budget"]
        self.batch = int(settings.get("batch_size", 16))

    def run(self, n: int, piece: dict[str, Any]) -> dict[str, Any]:
        from ragc.types import Scored

        assert self.out is not None
        passages, skipped = piece_passages(piece)
        contexts = []
        for i in range(0, len(passages), self.batch):
            chunk = [[Scored(p, 0.0, 0)] for p in passages[i : i + self.batch]]
            contexts += self.compressor.compress_batch([None] * len(chunk), chunk, self.budget)
        write_passages_parquet(
            shard_stem(self.out, n).with_suffix(".parquet"),
            passages,
            compressed=[c.text for c in contexts],
            spans=[json.dumps([getattr(g, "spans", ()) for g in c.segments]) for c in contexts],
            source_tokens=[c.source_tokens for c in contexts],
            kept_tokens=[c.kept_tokens for c in contexts],
        )
        info = {
            "rows": len(passages),
            "skipped": skipped,
            "source_tokens": sum(c.source_tokens for c in contexts),
            "kept_tokens": sum(c.kept_tokens for c in contexts),
        }
        mark_finished(self.out, n, info)
        return info
