"""The Triton kernels equal the reference: under the interpreter on CPU, natively on CUDA.

``TRITON_INTERPRET=1`` only takes effect if set before ``triton`` decorates the kernels, and
another test (or torch itself) may already have imported ``triton`` in this process, so the
interpreter checks run in one fresh subprocess (``triton_check.py``, a few small shapes:
the interpreter is ~1000x slower than a GPU) whose per-check results are reported here.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_cases import TRITON_CASES, checks

import ragc.kernels as kernels

pytest.importorskip("triton")

SCRIPT = Path(__file__).with_name("triton_check.py")
ALL_REPORTED = pytest.mark.parametrize(
    "kernel", ["meta", "scores", "select", "attention", "bound", "padding", "ties", "dispatch"]
)


@pytest.fixture(scope="module")
def interpreted() -> dict[str, dict]:
    """Every check of ``triton_check.py`` run once under the interpreter, by name."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("RAGC_KERNELS", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            results[row["name"]] = row
    output = f"{proc.stdout}\n{proc.stderr}"
    assert results, f"triton_check.py printed no result (exit {proc.returncode}):\n{output}"
    results["__exit__"] = {"ok": proc.returncode == 0, "detail": proc.stderr[-4000:]}
    return results


@ALL_REPORTED
def test_interpreted(interpreted: dict[str, dict], kernel: str) -> None:
    mine = {n: r for n, r in interpreted.items() if n.startswith(f"{kernel}[") or n == f"select[{kernel}]"}
    assert mine, f"no {kernel} check ran"
    failed = {n: r["detail"] for n, r in mine.items() if not r["ok"]}
    assert not failed, "\n".join(f"--- {n}\n{d}" for n, d in failed.items())


def test_every_check_ran_and_passed(interpreted: dict[str, dict]) -> None:
    expected = set(checks(dict.fromkeys(kernels.KERNELS, _Stub()), TRITON_CASES))
    assert expected <= set(interpreted), f"missing: {sorted(expected - set(interpreted))}"
    assert interpreted["__exit__"]["ok"], interpreted["__exit__"]["detail"]


class _Stub:
    """Stands in for a kernel module when only the names of the checks are needed."""

    def __getattr__(self, name: str) -> None:
        return None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_native_cuda() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1: the kernels would run interpreted")
    modules = {k: importlib.import_module(f"ragc.kernels.{k}_triton") for k in kernels.KERNELS}
    failed = []
    for name, check in checks(modules, TRITON_CASES, device="cuda").items():
        try:
            check()
        except AssertionError as err:
            failed.append(f"--- {name}\n{err}")
    assert not failed, "\n".join(failed)
