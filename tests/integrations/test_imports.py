"""Importing ragc never imports a framework; an adapter without its extra names the extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

FRAMEWORKS = ("llama_index", "langchain_core", "langchain_classic")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


def test_importing_ragc_imports_no_framework() -> None:
    out = run(f"""
        import sys
        import ragc, ragc.pipelines.rag, ragc.compressors, ragc.integrations, ragc.integrations.common
        print([m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}])
    """)
    assert out.stdout.strip() == "[]", out.stderr


def test_an_adapter_without_its_extra_names_the_extra() -> None:
    out = run("""
        import sys
        sys.modules['llama_index'] = None
        sys.modules['langchain_core'] = None
        from ragc.errors import MissingDependencyError
        pairs = (('ragc.integrations.llama_index', 'llamaindex'),
                 ('ragc.integrations.langchain', 'langchain'))
        for mod, extra in pairs:
            try:
                __import__(mod)
            except MissingDependencyError as e:
                assert f'ragc[{extra}]' in str(e), e
            else:
                raise SystemExit(mod + ' imported')
        print('ok')
    """)
    assert out.stdout.strip() == "ok", out.stderr
