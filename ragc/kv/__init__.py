"""KV-cache policies: how the decoder attends over its cache (``kv_policy`` in a pipeline)."""

from ragc.kv.base import DensePolicy, KVPolicy

__all__ = ["DensePolicy", "KVPolicy"]
