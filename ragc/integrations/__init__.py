"""Adapters for other frameworks, each behind its own extra; importing ``ragc`` imports none.

- :mod:`ragc.integrations.llama_index` (``pip install ragc[llamaindex]``): a node
  postprocessor that keeps every node's identity, an embedding, an LLM, a retriever and a
  response synthesizer over ragc's models.
- :mod:`ragc.integrations.langchain` (``pip install ragc[langchain]``): a document
  compressor for ``ContextualCompressionRetriever``, a retriever and an LLM.

Both share :mod:`ragc.integrations.common`, which holds the compression itself and its
provenance rules, with no framework imported.
"""
