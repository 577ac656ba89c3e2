"""Dense retrieval: a sentence-transformers encoder plus a FAISS inner-product index.

Embeddings are L2-normalised in float32, so inner product = cosine similarity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragc.device import Placement
from ragc.errors import (
    IndexMismatchError,
    IndexNotFoundError,
    InvalidArgumentError,
    MissingDependencyError,
)
from ragc.io import write_with
from ragc.retrievers.base import Retriever, read_manifest
from ragc.settings import Settings
from ragc.types import Passage, indexed_text
from ragc.validate import check_bool, check_int

try:
    import faiss
except ImportError:  # the extra is optional so that BM25-only users need not install it
    faiss = None  # type: ignore[assignment]

HAS_FAISS = faiss is not None
HAS_FAISS_GPU = bool(HAS_FAISS and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0)

INDEX_FILE = "index.faiss"
IndexType = Literal["flat", "hnsw", "ivf", "ivfpq"]
_INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq")
_PQ_BITS = 8  # 256 centroids per sub-quantizer: one byte per sub-vector
# faiss warns below 39 training points per IVF centroid (its k-means minimum).
_IVF_POINTS_PER_LIST = 39

log = logging.getLogger(__name__)


def require_faiss() -> Any:
    """The ``faiss`` module, or an ImportError saying which extra to install."""
    if faiss is None:
        raise MissingDependencyError(
            "Dense retrieval needs FAISS, which is not installed. Install it with "
            "`pip install ragc[cpu]` (faiss-cpu) or `pip install ragc[gpu]` (faiss-gpu)."
        )
    return faiss


def auto_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: ~4*sqrt(n), capped so each list gets >= 39 points."""
    return max(1, min(round(4 * n**0.5), n // _IVF_POINTS_PER_LIST))


def auto_pq_m(dim: int) -> int:
    """PQ sub-quantizers for ``dim``-d vectors: the most that give >= 8 dimensions each."""
    return max(m for m in range(1, dim // 8 + 1) if dim % m == 0) if dim >= 8 else 1


def training_size(n: int, nlist: int, pq: bool) -> int:
    """Vectors an IVF index trains on: 256 per list (FAISS samples down to that anyway), at
    least 39 per PQ centroid with PQ, never more than the corpus."""
    return min(n, max(256 * nlist, 39 * 2**_PQ_BITS if pq else 0))


def training_rows(n: int, size: int) -> np.ndarray:
    """Sorted positions of the ``size`` training vectors among ``n`` (seeded: the same every build)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))


@dataclass(frozen=True)
class EmbeddingShards:
    """Document embeddings in passage order, held in shards loaded one at a time (so an
    IVF/IVF-PQ index of a corpus larger than memory is built shard by shard)."""

    sizes: tuple[int, ...]
    dimension: int
    load: Callable[[int], np.ndarray]
    model: str  # the encoder that made them

    @classmethod
    def of(cls, vectors: np.ndarray, model: str) -> EmbeddingShards:
        return cls((len(vectors),), int(vectors.shape[1]), lambda i: vectors, model)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The vectors at sorted global ``positions``."""
        out, start = [], 0
        for i, size in enumerate(self.sizes):
            local = positions[(positions >= start) & (positions < start + size)] - start
            if len(local):
                out.append(self.load(i)[local])
            start += size
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


@dataclass(eq=False)
class DenseRetriever(Retriever):
    """Bi-encoder retrieval (Sentence-BERT / DPR style) over a FAISS index.

    Parameters:
        model: packaged encoder name (``"minilm"``), HF id or local sentence-transformers folder.
        index_type: ``"flat"`` (exact inner product), ``"hnsw"`` (graph, approximate) or
            ``"ivf"`` (inverted lists, approximate) or ``"ivfpq"`` (inverted lists of
            product-quantised codes: ~1/32 of the memory, for corpora of millions).
        hnsw_m: HNSW graph degree (``hnsw`` only; fixed at build time).
        ef_search: HNSW search beam width (``hnsw`` only; larger = more exact, slower).
        nlist: IVF list count (``ivf``, ``ivfpq``); 0 = auto (~4*sqrt(n), at most n // 39).
        nprobe: IVF lists scanned per query (``ivf``, ``ivfpq``).
        pq_m: IVF-PQ sub-quantizers (bytes per vector); 0 = auto (8 dimensions each). IVF
            indexes train on :func:`training_size` vectors, a seeded sample of the corpus.
        batch_size: encoder batch size.
        placement: where the encoder runs (default: the pipeline's; ``dtype: auto``).
        show_progress: show a progress bar while encoding the corpus.
        max_seq_length: truncate inputs to this many tokens (``None`` = the model's own limit).
    """

    name: ClassVar[str] = "dense"
    int8: ClassVar[str] = "allowed"
    settings: ClassVar[dict[str, type[Settings]]] = {"placement": Placement}

    model: str = "minilm"
    index_type: IndexType = "flat"
    hnsw_m: int = 32
    ef_search: int = 64
    nlist: int = 0
    nprobe: int = 8
    pq_m: int = 0
    batch_size: int = 64
    placement: Placement | dict[str, Any] | str | None = None
    show_progress: bool = True
    max_seq_length: int | None = None

    def __post_init__(self) -> None:
        Retriever.__init__(self)
        require_faiss()  # fail at construction, not after minutes of encoding
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidArgumentError(f"model must be an encoder name, HF id or path, got {self.model!r}.")
        if self.index_type not in _INDEX_TYPES:
            raise InvalidArgumentError(
                f"index_type must be one of {', '.join(_INDEX_TYPES)}, got {self.index_type!r}."
            )
        Placement.parse(self.placement)
        for field_name in ("hnsw_m", "ef_search", "nprobe", "batch_size"):
            check_int(field_name, getattr(self, field_name), minimum=1)
        check_int("nlist", self.nlist, minimum=0)
        check_int("pq_m", self.pq_m, minimum=0)
        check_bool("show_progress", self.show_progress)
        if self.max_seq_length is not None:
            check_int("max_seq_length", self.max_seq_length, minimum=1)
        self._faiss_index: Any = None  # what is searched (on GPU when available)
        self._gpu_resources: Any = None  # must outlive the GPU index
        self._encoder: Any = None

    # -- Retriever hooks ----------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"model": self.model, "index_type": self.index_type}
        if self.index_type == "hnsw":
            cfg["hnsw_m"] = self.hnsw_m
        if self.index_type in ("ivf", "ivfpq"):
            cfg["nlist"] = self.nlist
        if self.index_type == "ivfpq":
            cfg["pq_m"] = self.pq_m
        return cfg

    def _manifest_extra(self) -> dict[str, Any]:
        return {"model": self.model, "dimension": int(self._faiss_index.d)}

    def _check_manifest(self, manifest: dict[str, Any], directory: Path) -> None:
        # Checked first and without loading any encoder: a model mismatch is the common
        # mistake, and loading the wrong model would be slow (or impossible offline).
        built_with = manifest.get("model", manifest.get("config", {}).get("model"))
        if built_with != self.model:
            raise IndexMismatchError(
                f"Index at {directory} was built with embedding model {built_with!r}, but this "
                f"retriever uses {self.model!r}. Load it with DenseRetriever(model={built_with!r}) "
                "or rebuild the index with this model."
            )
        super()._check_manifest(manifest, directory)

    def _index(self, passages: list[Passage]) -> None:
        vectors = self.embed([indexed_text(p) for p in passages], queries=False)
        self._index_embedded(passages, EmbeddingShards.of(vectors, self.model))

    def _index_embedded(self, passages: list[Passage], embeddings: Any) -> None:
        """Index ``passages`` from their precomputed :class:`EmbeddingShards`."""
        fa = require_faiss()
        if embeddings.model != self.model:
            raise IndexMismatchError(
                f"The embeddings were made by {embeddings.model!r}; this retriever uses {self.model!r}."
            )
        n = sum(embeddings.sizes)
        if n != len(passages):
            raise IndexMismatchError(f"{n} embeddings were given for {len(passages)} passages.")
        index = self._build_index(fa, n, embeddings)
        for i in range(len(embeddings.sizes)):
            index.add(np.ascontiguousarray(embeddings.load(i), dtype=np.float32))
        self._faiss_index = self._to_device(index)

    def _search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        vectors = self.embed(queries, queries=True)
        if vectors.shape[1] != self._faiss_index.d:
            raise IndexMismatchError(
                f"Encoder {self.model!r} gives {vectors.shape[1]}-d vectors but the index holds "
                f"{self._faiss_index.d}-d vectors; rebuild the index with this model."
            )
        self._set_search_params(self._faiss_index, exhaustive=False)
        scores, ids = self._faiss_index.search(vectors, k)
        if (ids < 0).any():
            scores, ids = self._fill_missing(vectors, scores, ids, k)
        return [
            [(int(i), float(s)) for i, s in zip(id_row, score_row, strict=True)]
            for id_row, score_row in zip(ids.tolist(), scores.tolist(), strict=True)
        ]

    def _save_payload(self, directory: Path) -> None:
        fa = require_faiss()
        index = self._faiss_index
        if self._gpu_resources is not None:
            index = fa.index_gpu_to_cpu(index)
        write_with(directory / INDEX_FILE, lambda tmp: fa.write_index(index, str(tmp)))

    def _load_payload(self, directory: Path, passages: list[Passage]) -> None:
        fa = require_faiss()
        path = directory / INDEX_FILE
        if not path.is_file():
            raise IndexNotFoundError(f"{path} is missing; rebuild the index (DenseRetriever.index + save).")
        try:
            index = fa.read_index(str(path))
        except RuntimeError as e:
            raise IndexNotFoundError(f"{path} is not a readable FAISS index ({e}); rebuild the index.") from e
        manifest_dim = _read_dimension(directory)
        if manifest_dim is not None and manifest_dim != index.d:
            raise IndexMismatchError(
                f"{path} holds {index.d}-d vectors but its manifest says {manifest_dim}; rebuild the index."
            )
        if index.ntotal != len(passages):
            raise IndexMismatchError(
                f"{path} holds {index.ntotal} vectors but {len(passages)} passages were saved "
                "beside it; the index is incomplete or stale, rebuild it."
            )
        self._faiss_index = self._to_device(index)

    # -- encoding -----------------------------------------------------------------
    def encoder(self) -> Any:
        """The sentence-transformers model (loaded on first use, shared process-wide)."""
        if self._encoder is None:
            from ragc.models import load_sentence_encoder

            where = self.where
            self._encoder = load_sentence_encoder(self.model, where.device, where.dtype)
        return self._encoder

    def embed(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors, C-contiguous (what FAISS expects)."""
        model = self.encoder()
        # encode_query / encode_document apply the model's query/document prompts (if any).
        method = getattr(model, "encode_query" if queries else "encode_document", model.encode)
        with _max_seq_length(model, self.max_seq_length):
            emb = method(
                texts,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                show_progress_bar=self.show_progress and not queries,
            )
        # Normalise after the cast: doing it in bf16 would leave norms off by ~1e-2.
        vectors = np.ascontiguousarray(emb.float().cpu().numpy(), dtype=np.float32)
        require_faiss().normalize_L2(vectors)
        return vectors

    # -- FAISS --------------------------------------------------------------------
    def _build_index(self, fa: Any, n: int, embeddings: EmbeddingShards) -> Any:
        dim = embeddings.dimension
        if self.index_type == "flat":
            return fa.IndexFlatIP(dim)
        if self.index_type == "hnsw":
            return fa.IndexHNSWFlat(dim, self.hnsw_m, fa.METRIC_INNER_PRODUCT)
        nlist = self.nlist or auto_nlist(n)
        if nlist > n:
            raise InvalidArgumentError(
                f"nlist={nlist} exceeds the corpus size ({n} passages); use nlist=0 (auto) "
                "or a smaller value."
            )
        quantizer = fa.IndexFlatIP(dim)
        pq = self.index_type == "ivfpq"
        if pq:
            m = self.pq_m or auto_pq_m(dim)
            if dim % m:
                raise InvalidArgumentError(f"pq_m={m} must divide the embedding dimension {dim}.")
            if n < 2**_PQ_BITS:
                raise InvalidArgumentError(
                    f"index_type='ivfpq' needs at least {2**_PQ_BITS} passages to train its codebooks, "
                    f"got {n}; use 'flat' or 'ivf' for a corpus this small."
                )
            index = fa.IndexIVFPQ(quantizer, dim, nlist, m, _PQ_BITS, fa.METRIC_INNER_PRODUCT)
        else:
            index = fa.IndexIVFFlat(quantizer, dim, nlist, fa.METRIC_INNER_PRODUCT)
        if nlist == 1:  # one centroid is just the mean: silence FAISS's small-sample warning
            index.cp.min_points_per_centroid = 1
        sample = embeddings.rows(training_rows(n, training_size(n, nlist, pq)))
        index.train(sample)  # k-means with FAISS's fixed seed: deterministic
        return index

    def _set_search_params(self, index: Any, *, exhaustive: bool) -> None:
        if self.index_type == "hnsw":
            index.hnsw.efSearch = max(self.ef_search, index.ntotal) if exhaustive else self.ef_search
        elif self.index_type in ("ivf", "ivfpq"):
            index.nprobe = index.nlist if exhaustive else min(self.nprobe, index.nlist)

    def _fill_missing(
        self, vectors: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Redo rows with fewer than ``k`` hits (-1 ids) with an exhaustive search.

        Approximate indexes return -1 when the probed lists / visited nodes hold fewer
        than ``k`` vectors; the contract promises exactly ``k`` results.
        """
        rows = np.flatnonzero((ids < 0).any(axis=1))
        self._set_search_params(self._faiss_index, exhaustive=True)
        try:
            s2, i2 = self._faiss_index.search(vectors[rows], k)
        finally:
            self._set_search_params(self._faiss_index, exhaustive=False)
        scores[rows], ids[rows] = s2, i2
        for r in np.flatnonzero((ids < 0).any(axis=1)):
            # Only a disconnected HNSW graph gets here. Pad with unseen passages at score
            # -1, the lowest possible cosine, so the ranking stays best-first.
            log.warning("Dense index returned fewer than %d hits for a query; padding with score -1.", k)
            seen = set(ids[r][ids[r] >= 0].tolist())
            missing = np.flatnonzero(ids[r] < 0)
            pad = [i for i in range(self._faiss_index.ntotal) if i not in seen]
            ids[r, missing] = pad[: len(missing)]
            scores[r, missing] = -1.0
        return scores, ids

    def _to_device(self, index: Any) -> Any:
        """Move ``index`` to the GPU when the encoder runs on CUDA and FAISS can."""
        device = self.where.device
        # FAISS has no GPU HNSW; flat and IVF move over unchanged.
        if not (HAS_FAISS_GPU and device.startswith("cuda") and self.index_type != "hnsw"):
            return index
        gpu_id = int(device.split(":", 1)[1]) if ":" in device else 0
        self._gpu_resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(self._gpu_resources, gpu_id, index)


def _read_dimension(directory: Path) -> int | None:
    dim = read_manifest(directory).get("dimension")
    return int(dim) if dim is not None else None


@contextmanager
def _max_seq_length(model: Any, value: int | None) -> Iterator[None]:
    """Temporarily cap the encoder's input length (the model object is shared, so restore it)."""
    if value is None:
        yield
        return
    old = model.max_seq_length
    model.max_seq_length = value
    try:
        yield
    finally:
        model.max_seq_length = old
