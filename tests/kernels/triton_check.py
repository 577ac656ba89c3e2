"""Run the Triton kernels against the reference; one JSON line per check, exit 1 on a failure.

Run by ``test_triton.py`` in a fresh process with ``TRITON_INTERPRET=1`` (the interpreter must
be chosen before ``triton`` decorates the kernels, which an earlier import in the pytest
process would have done natively)::

    TRITON_INTERPRET=1 python tests/kernels/triton_check.py [NAME ...]
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback

import torch
from kernel_cases import TRITON_CASES, checks

import ragc.kernels as kernels
from ragc.kernels import page_meta_reference


def triton_modules() -> dict:
    return {k: importlib.import_module(f"ragc.kernels.{k}_triton") for k in kernels.KERNELS}


def dispatcher_checks(device: str) -> dict:
    """Under the interpreter a forced ``RAGC_KERNELS=triton`` runs on CPU tensors; the default stays torch."""

    def forced() -> None:
        os.environ["RAGC_KERNELS"] = "triton"
        try:
            assert kernels.backend(torch.device(device)) == "triton"
            keys = torch.randn(2, 1, 9, 4, device=device)
            got = kernels.page_meta(keys, 4, torch.tensor([0, 5]))
            want = page_meta_reference.page_meta(keys, 4, torch.tensor([0, 5]))
            assert all(torch.equal(g, w) for g, w in zip(got, want))
        finally:
            del os.environ["RAGC_KERNELS"]

    def default() -> None:
        assert kernels.backend(torch.device("cpu")) == "torch"

    return {"dispatch[forced]": forced, "dispatch[default-cpu]": default}


def run(device: str, names: list[str]) -> int:
    todo = {**checks(triton_modules(), TRITON_CASES, device), **dispatcher_checks(device)}
    failed = 0
    for name, check in todo.items():
        if names and name not in names:
            continue
        t0 = time.perf_counter()
        try:
            check()
            detail, ok = "", True
        except Exception:  # report every failure, not only the first
            detail, ok = traceback.format_exc(), False
        failed += not ok
        seconds = round(time.perf_counter() - t0, 2)
        print(json.dumps({"name": name, "ok": ok, "seconds": seconds, "detail": detail}))
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(run("cpu", sys.argv[1:]))
