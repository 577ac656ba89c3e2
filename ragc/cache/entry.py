"""The on-disk form of one segment-cache entry (``docs/formats.md``)::

    b"RAGCSEG2" | u64 header length | header JSON | payload

The header records the entry's own key, the value kind (``"tensors"``: a safetensors blob,
``"text"``: UTF-8), the payload size and its SHA-256. :func:`decode` refuses anything that
does not check out, including a whole, well-formed entry copied under another key and a
payload whose checksum matches but that does not decode.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import TYPE_CHECKING, Any, TypeAlias

from ragc.errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

MAGIC = b"RAGCSEG2"
Value: TypeAlias = "dict[str, torch.Tensor] | str"


class Corrupt(Exception):
    """An entry that cannot be trusted (the cache drops it and recomputes)."""


def encode(value: Value, key: str) -> bytes:
    """The bytes of an entry holding ``value`` under ``key``."""
    if isinstance(value, str):
        kind, payload = "text", value.encode("utf-8")
    elif isinstance(value, dict) and value:
        import torch
        from safetensors.torch import save

        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()):
            raise InvalidArgumentError("tensor cache values are dicts of str -> torch.Tensor.")
        payload = save({k: v.detach().contiguous().cpu() for k, v in value.items()})
        kind = "tensors"
    else:
        raise InvalidArgumentError(
            f"cache values are str or a non-empty dict of tensors, got {type(value).__name__}."
        )
    header = {"key": key, "kind": kind, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    head = json.dumps(header).encode("utf-8")
    return MAGIC + struct.pack("<Q", len(head)) + head + payload


def decode(data: bytes, key: str) -> Value:
    """The value of an entry read for ``key``; :class:`Corrupt` when it cannot be trusted."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise Corrupt("bad magic (damaged, or written by another ragc version)")
    (hlen,) = struct.unpack_from("<Q", data, len(MAGIC))
    start = len(MAGIC) + 8
    if hlen > 4096 or start + hlen > len(data):
        raise Corrupt("truncated header")
    try:
        header: dict[str, Any] = json.loads(data[start : start + hlen])
        recorded, kind, size, digest = header["key"], header["kind"], int(header["size"]), header["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise Corrupt(f"bad header: {e}") from e
    if recorded != key:
        raise Corrupt("it was written for another key")
    payload = data[start + hlen :]
    if len(payload) != size:
        raise Corrupt(f"payload is {len(payload)} bytes, header says {size}")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise Corrupt("checksum mismatch")
    try:
        if kind == "text":
            return payload.decode("utf-8")
        if kind == "tensors":
            from safetensors.torch import load

            value = load(payload)
            if value:
                return value
    except Exception as e:  # a matching checksum over bytes that do not decode
        raise Corrupt(f"payload does not decode ({type(e).__name__})") from e
    raise Corrupt(f"unknown or empty kind {kind!r}")
