"""The sharded jobs: index a corpus, pre-compress a corpus, evaluate a question set.

Each plans its shards, claims its output folder (:mod:`ragc.engines.jobs`), runs the shards
not yet finished on an :class:`~ragc.engines.run.Engine`, then merges them in shard order,
so the result does not depend on which worker did what, or when.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ragc.engines.jobs import claim_job, finished, reconcile, shard_stem
from ragc.engines.pieces import Piece, plan_pieces
from ragc.engines.run import Engine, run_shards
from ragc.engines.workers import CompressWorker, EmbedWorker, passage_of, read_parquet_rows
from ragc.errors import ConfigError, CorpusReadError, EmptyCorpusError
from ragc.types import Passage

DEFAULT_SHARD_SIZE = 10_000
#: compressors whose output depends on the passage alone (``ragc compress`` accepts these)
QUERY_BLIND = ("truncate", "llmlingua2", "compllm", "xrag")


def _shards(pieces: list[Piece]) -> list[dict[str, Any]]:
    return [{"n": p.index, "corpus": p.to_dict()} for p in pieces]


def _run_missing(
    engine: Engine, worker: type, settings: dict[str, Any], out: Path, shards: list[dict[str, Any]], desc: str
) -> None:
    todo = [s for s in shards if finished(out, s["n"]) is None]
    if len(todo) < len(shards):
        print(f"[ragc] resuming: {len(shards) - len(todo)} of {len(shards)} shards already finished")
    units = [_estimate(s["corpus"]) for s in todo]
    run_shards(engine, worker, {**settings, "out": str(out)}, todo, units=units, desc=desc)


def _estimate(corpus: dict[str, Any]) -> int:
    """Passages a piece will give, for the progress bar (files and line counts are known)."""
    p = Piece.from_dict(corpus)
    return len(p.files) if p.kind == "files" else max(1, p.rows)


def merged_passages(out: Path, shards: list[dict[str, Any]], corpus: str | Path) -> list[Passage]:
    """Every shard's passages in shard order; duplicate ids across shards are an error naming
    both places, empty passages a warning (as :func:`ragc.corpus.load_corpus`)."""
    passages: list[Passage] = []
    seen: dict[str, int] = {}
    skipped: list[str] = []
    for s in shards:
        info = finished(out, s["n"]) or {}
        skipped += info.get("skipped", [])
        for row in read_parquet_rows(shard_stem(out, s["n"]).with_suffix(".parquet")):
            if row["id"] in seen:
                raise CorpusReadError(
                    f"'{corpus}': duplicate id '{row['id']}' in shards {seen[row['id']]} and {s['n']}. "
                    "Ids must be unique: fix or remove one of them."
                )
            seen[row["id"]] = s["n"]
            passages.append(passage_of(row))
    if not passages:
        raise EmptyCorpusError(f"Corpus '{corpus}' is empty: it holds no passages with text.")
    if skipped:
        from ragc.corpus import CorpusWarning

        warnings.warn(
            f"'{corpus}': skipped {len(skipped)} passages with empty text.", CorpusWarning, stacklevel=2
        )
    return passages


# -- index build ------------------------------------------------------------------------
def build_index(
    corpus: str | Path,
    out: str | Path,
    retriever: Any,
    engine: Engine,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resume: bool = False,
) -> int:
    """Index ``corpus`` with ``retriever`` into ``out``: passages (and dense embeddings) made
    in shards on ``engine``, then the index built from the shards and saved. Returns the
    passage count."""
    from safetensors.numpy import load_file

    from ragc.retrievers.dense import DenseRetriever, EmbeddingShards

    dense = [r for r in [retriever, *retriever.parts()] if isinstance(r, DenseRetriever)]
    models = {(d.model, d.max_seq_length) for d in dense}
    if len(models) > 1:
        raise ConfigError("A sharded index build embeds once: its dense retrievers must share one model.")
    embed = None
    if dense:
        d = dense[0]
        placement = dataclasses.asdict(d.placement) if dataclasses.is_dataclass(d.placement) else d.placement
        embed = {
            "model": d.model,
            "batch_size": d.batch_size,
            "max_seq_length": d.max_seq_length,
            "placement": placement,
        }
    engine.check()
    pieces = plan_pieces(corpus, shard_size)
    shards = _shards(pieces)
    job = {
        "kind": "index",
        "retriever": retriever.name,
        "config": retriever.config(),
        "embed": embed,
        "corpus": str(Path(corpus).resolve()),
        "shard_size": shard_size,
    }
    folder = claim_job(out, job, resume=resume, what="index")
    reconcile(folder, [s["corpus"] for s in shards])
    _run_missing(engine, EmbedWorker, {"dense": embed}, folder, shards, "index")
    passages = merged_passages(folder, shards, corpus)
    embeddings = None
    if embed is not None:
        sizes = tuple(int((finished(folder, s["n"]) or {})["rows"]) for s in shards)

        def load(i: int) -> np.ndarray:
            return load_file(str(shard_stem(folder, shards[i]["n"]).with_suffix(".safetensors")))["vectors"]

        dim = next(
            (int((finished(folder, s["n"]) or {})["dimension"]) for s, n in zip(shards, sizes) if n), 0
        )
        embeddings = EmbeddingShards(sizes, dim, load, dense[0].model)
    retriever.index(passages, embeddings=embeddings)
    retriever.save(folder, force=True)  # the folder is this job's (claimed above)
    return len(passages)


# -- compress ---------------------------------------------------------------------------
def compress_corpus(
    corpus: str | Path,
    out: str | Path,
    compressor: str,
    budget: float | int,
    engine: Engine,
    *,
    decoder: str = "qwen2.5-0.5b",
    options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resume: bool = False,
) -> dict[str, Any]:
    """Pre-compress every passage of ``corpus`` with a query-blind ``compressor`` into ``out``
    (Parquet shards; soft compressors also fill the segment cache at ``cache_dir``). Returns
    the totals (passages, source and kept tokens)."""
    from ragc import registry
    from ragc.types import Budget

    if compressor not in QUERY_BLIND:
        raise ConfigError(
            f"ragc compress runs query-blind compressors ({', '.join(QUERY_BLIND)}); {compressor!r} "
            "needs the question, so it can only run at query time."
        )
    Budget.parse(budget)
    registry.create("compressor", compressor, **(options or {}))  # bad options fail before any work
    counter = registry.create("decoder", "hf", model=decoder).token_counter
    del counter  # loaded only so that an unknown decoder fails here, not in every worker
    engine.check()
    pieces = plan_pieces(corpus, shard_size)
    shards = _shards(pieces)
    settings = {
        "compressor": compressor,
        "options": options or {},
        "budget": budget,
        "decoder": decoder,
        "cache_dir": cache_dir,
    }
    job = {
        "kind": "compress",
        **{k: v for k, v in settings.items() if k != "cache_dir"},
        "corpus": str(Path(corpus).resolve()),
        "shard_size": shard_size,
    }
    folder = claim_job(out, job, resume=resume, what="compressed corpus")
    reconcile(folder, [s["corpus"] for s in shards])
    _run_missing(engine, CompressWorker, settings, folder, shards, f"compress {compressor}")
    infos = [finished(folder, s["n"]) or {} for s in shards]
    return {
        "passages": sum(i["rows"] for i in infos),
        "source_tokens": sum(i["source_tokens"] for i in infos),
        "kept_tokens": sum(i["kept_tokens"] for i in infos),
        "shards": len(shards),
    }


def read_compressed(folder: str | Path) -> dict[str, dict[str, Any]]:
    """passage id -> row (``text``, ``compressed``, token counts) of a ``ragc compress`` folder."""
    from ragc.engines.jobs import PLAN_FILE

    folder = Path(folder)
    try:
        plan = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorpusReadError(f"{folder} is not a `ragc compress` folder ({e}).") from e
    rows: dict[str, dict[str, Any]] = {}
    for n in range(len(plan)):
        if finished(folder, n) is None:
            raise CorpusReadError(f"{folder}: shard {n} is not finished; rerun `ragc compress ... --resume`.")
        for row in read_parquet_rows(shard_stem(folder, n).with_suffix(".parquet")):
            rows[row["id"]] = row
    return rows
