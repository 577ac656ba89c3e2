"""KV-cache policies: how the decoder attends over its cache (``kv_policy`` in a pipeline).

``dense`` (:mod:`ragc.kv.base`) attends over everything; ``page_retrieval``
(:mod:`ragc.kv.page_retrieval`) attends, per decoding step, to the KV pages most relevant to
the step's query within a token budget (Quest).
"""

from ragc.kv.base import DensePolicy, KVPolicy
from ragc.kv.page_retrieval import PageRetrieval

__all__ = ["DensePolicy", "KVPolicy", "PageRetrieval"]
