"""The README's LlamaIndex and LangChain snippets run as printed, offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet(section: str) -> str:
    text = README.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match, f"no python block under '## {section}'"
    return match.group(1)


def test_the_langchain_snippet_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("langchain_classic")
    exec(compile(snippet("LangChain"), "README.md#langchain", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("tides "), out
    assert "Moon's gravity" in out[0]


@pytest.mark.slow
def test_the_llamaindex_snippet_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core import Settings

    saved = Settings._llm, Settings._embed_model
    try:
        exec(compile(snippet("LlamaIndex"), "README.md#llamaindex", "exec"), {})
    finally:
        Settings._llm, Settings._embed_model = saved
    assert "Sicily" in capsys.readouterr().out
