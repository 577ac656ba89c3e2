"""Where the trained soft-compressor artefacts live, shipped or user-trained.

An artefact is a folder with ``config.json`` + ``weights.safetensors``. The shipped ones
are ``ragc/data/<kind>/<decoder>/`` (``kind`` is ``xrag`` or ``compllm``); any other
folder comes from ``ragc train <kind> --out DIR``.
"""

from __future__ import annotations

from pathlib import Path

from ragc.errors import ModelNotFoundError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
_DATA = Path(__file__).resolve().parent.parent / "data"


def packaged_dir(kind: str, decoder: str) -> Path:
    """The folder of the shipped ``kind`` artefact for a packaged decoder name."""
    return _DATA / kind / decoder


def packaged_decoders(kind: str) -> list[str]:
    """Decoders with a shipped ``kind`` artefact."""
    return sorted(p.name for p in (_DATA / kind).glob("*") if (p / CONFIG_FILE).is_file())


def artefact_dir(kind: str, weights: str, decoder: str, what: str) -> Path:
    """The folder ``weights`` (``"packaged"`` or a path) names for ``decoder``, checked.

    ``what`` names the artefact in errors ("xRAG projector", "CompLLM weights").
    """
    folder = packaged_dir(kind, decoder) if weights == "packaged" else Path(weights).expanduser()
    if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
        return folder
    train = f"ragc train {kind} --decoder {decoder} --out DIR"
    if weights == "packaged":
        raise ModelNotFoundError(
            f"No {what} packaged for decoder {decoder!r} (packaged: "
            f"{', '.join(packaged_decoders(kind)) or 'none'}). Train with `{train}` and pass weights=DIR."
        )
    raise ModelNotFoundError(
        f"{folder} holds no {what} (needs {CONFIG_FILE} and {WEIGHTS_FILE}); write one with `{train}`."
    )
