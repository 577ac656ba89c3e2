"""Trained artefacts and loaded models: one save/load format, one fingerprint, one cache.

An artefact is a folder holding ``config.json`` (its ``format`` string, the models it was
trained for and a training record) and ``weights.safetensors`` (floating-point tensors in
fp16). :func:`save_artefact` writes the weights first and the config last, each through a
temporary file and a rename, so a loader that finds a config always finds whole weights.
The shipped artefacts live in ``ragc/data/<kind>[/<decoder>]``; any other folder comes from
``ragc train <kind> --out DIR``.

:func:`fingerprint` is the one recipe that identifies weights (an encoder a head was trained
on, the trained tensors behind a cache key). :func:`shared` is the process-wide cache of
loaded models (the decoder, the encoders, trained heads), so a pipeline whose compressor
and decoder read the same model holds one copy; :func:`release` frees them.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ragc.errors import ModelIntegrityError, ModelNotFoundError
from ragc.io import claim_folder, write_json, write_with
from ragc.paths import PACKAGE_DATA

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
#: Recorded in configs written since 0.2; older artefacts carry fingerprints of other recipes.
FINGERPRINT_RECIPE = 2
T = TypeVar("T")


# ---------------------------------------------------------------- where artefacts are


def packaged_dir(kind: str, decoder: str | None = None) -> Path:
    """The folder of the shipped ``kind`` artefact (per decoder for soft compressors)."""
    return PACKAGE_DATA / kind / decoder if decoder else PACKAGE_DATA / kind


def packaged_decoders(kind: str) -> list[str]:
    """Decoders with a shipped ``kind`` artefact."""
    return sorted(p.name for p in (PACKAGE_DATA / kind).glob("*") if (p / CONFIG_FILE).is_file())


def artefact_dir(
    kind: str, weights: str, what: str, decoder: str | None = None, train: str | None = None
) -> Path:
    """The folder ``weights`` (``"packaged"`` or a path) names, checked to hold an artefact.

    ``what`` names the artefact in errors ("xRAG projector", "CompLLM weights"); ``train`` is
    the command that writes one (default ``ragc train <kind> [--decoder D]``).
    """
    folder = packaged_dir(kind, decoder) if weights == "packaged" else Path(weights).expanduser()
    if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
        return folder
    train = (train or f"ragc train {kind}" + (f" --decoder {decoder}" if decoder else "")) + " --out DIR"
    if weights == "packaged":
        where = f" for decoder {decoder!r} (packaged: {', '.join(packaged_decoders(kind)) or 'none'})"
        raise ModelNotFoundError(
            f"No {what} packaged{where if decoder else ''}. Train with `{train}` and pass weights=DIR."
        )
    raise ModelNotFoundError(
        f"{folder} holds no {what} (needs {CONFIG_FILE} and {WEIGHTS_FILE}); write one with `{train}`."
    )


def stamp(folder: Path) -> tuple[int, ...]:
    """Modification times and sizes of an artefact's two files: part of a cache key, so an
    artefact rewritten in place is loaded again."""
    stats = [(folder / name).stat() for name in (CONFIG_FILE, WEIGHTS_FILE)]
    return tuple(x for st in stats for x in (st.st_mtime_ns, st.st_size))


def is_artefact(folder: Path) -> bool:
    """Whether ``folder`` holds a ragc artefact or a training checkpoint of one."""
    if (folder / "checkpoint.pt").is_file():
        return True
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and str(meta.get("format", "")).startswith("ragc-")


def claim_artefact_folder(out: str | Path, force: bool = False) -> Path:
    """The training output folder, created; one holding anything but an artefact is refused
    unless ``force`` (training never overwrites a user's ``config.json``)."""
    return claim_folder(out, ours=is_artefact, what="artefact folder", force=force)


# ---------------------------------------------------------------- save and load


def save_artefact(
    out: str | Path,
    config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    *,
    max_bytes: int | None = None,
) -> Path:
    """Write ``tensors`` (floating point as fp16) and ``config`` into the folder ``out``.

    ``config`` must hold a ``format``; :data:`FINGERPRINT_RECIPE` is added. Raises
    :class:`ModelIntegrityError` if the weights would exceed ``max_bytes``.
    """
    import torch
    from safetensors.torch import save_file

    if "format" not in config:
        raise ValueError("an artefact config needs a 'format'")
    state = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in tensors.items()
    }
    size = sum(v.numel() * v.element_size() for v in state.values())
    if max_bytes is not None and size > max_bytes:
        raise ModelIntegrityError(
            f"The artefact would be {size / 2**20:.1f} MB (limit {max_bytes / 2**20:.0f} MB): "
            "train fewer parameters."
        )
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": str(config["format"])}
    write_with(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata=meta))
    write_json(folder / CONFIG_FILE, {**config, "fingerprint_recipe": FINGERPRINT_RECIPE})
    return folder


def read_config(
    folder: Path, formats: tuple[str, ...], error: type[ModelIntegrityError] = ModelIntegrityError
) -> dict[str, Any]:
    """The artefact's config, checked to be a JSON object of one of ``formats``."""
    path = folder / CONFIG_FILE
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelIntegrityError(f"{path} is not a readable JSON config: {e}") from e
    if not isinstance(meta, dict):
        raise ModelIntegrityError(f"{path} is not a JSON object.")
    if meta.get("format") not in formats:
        raise error(f"{folder} has format {meta.get('format')!r}, expected one of {', '.join(formats)}.")
    return meta


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The artefact's tensors as stored (fp16), on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise ModelIntegrityError(f"{path} is not a readable safetensors file: {e}") from e


def fingerprint(tensors: Mapping[str, torch.Tensor], samples: int = 4096) -> str:
    """Identity of a set of weights: a hash of every tensor's name, shape and a strided
    sample of ``samples`` values rounded to bf16.

    The rounding makes a model loaded in fp32 or bf16 give the same fingerprint, while
    another checkpoint does not.
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        flat = t.reshape(-1)
        sample = flat[:: max(1, flat.numel() // samples)].to(torch.bfloat16).float().cpu()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:32]


def checked_fingerprint(meta: Mapping[str, Any], key: str) -> str | None:
    """The fingerprint stored under ``key``, or ``None`` for an artefact written before
    :data:`FINGERPRINT_RECIPE` (its value came from another recipe and cannot be compared)."""
    if meta.get("fingerprint_recipe") != FINGERPRINT_RECIPE:
        import warnings

        warnings.warn(
            f"This artefact was written by ragc 0.1 with an older fingerprint recipe; its {key} "
            "is not checked. Retrain it (ragc train ...) to have it checked.",
            FutureWarning,
            stacklevel=3,
        )
        return None
    value = meta.get(key)
    return str(value) if value is not None else None


# ---------------------------------------------------------------- the process-wide model cache


class ModelCache:
    """Loaded models by key, shared by every component of the process.

    ``get(key, load)`` returns the cached value or calls ``load()`` once (concurrent callers
    wait for it); ``release()`` drops every entry (or those whose key starts with a given
    kind) so their memory can be reclaimed.
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._lock = threading.RLock()

    def get(self, key: tuple[Hashable, ...], load: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._items:
                self._items[key] = load()
            return self._items[key]  # type: ignore[no-any-return]

    def release(self, kind: str | None = None) -> int:
        """Drop the cached models (of ``kind`` only, when given); return how many."""
        with self._lock:
            keys = [k for k in self._items if kind is None or (isinstance(k, tuple) and k[0] == kind)]
            for k in keys:
                del self._items[k]
        gc.collect()
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return len(keys)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return len(keys)

    def __len__(self) -> int:
        return len(self._items)


MODELS = ModelCache()


def shared(key: tuple[Hashable, ...], load: Callable[[], T]) -> T:
    """The process-wide copy of the model ``key`` names, loaded by ``load()`` on first use.

    ``key[0]`` is the kind (``"causal_lm"``, ``"sentence_encoder"``, ...). Never modify a
    shared model's weights; load a private copy to train.
    """
    return MODELS.get(key, load)


def release(kind: str | None = None) -> int:
    """Free the process-wide models (all, or those of ``kind``); return how many were dropped."""
    return MODELS.release(kind)
