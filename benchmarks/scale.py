"""Sharded engines at scale: local vs Ray (1 and 2 workers) on dense embedding and llmlingua2.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/scale.py --n 2000

The first ``n`` passages of the SQuAD v1.1 dev corpus are written as one JSONL file and cut
into shards of ``--shard-size`` passages. Two jobs run on three engines each, every run into
a fresh output folder: the dense index build (:func:`ragc.engines.tasks.build_index`, the
default ``dense`` retriever: MiniLM, flat index) and llmlingua2 pre-compression at rate 0.33
(:func:`ragc.engines.tasks.compress_corpus`), on ``Engine("local")``, ``Engine("ray",
workers=1)`` and ``Engine("ray", workers=2)``. The local runs go first, with no Ray process
on the machine; then Ray is imported and a local cluster started once (both timed: the fixed
start-up cost), reused by every Ray run and shut down at the end.

Per run: wall seconds of the whole job call (planning, model loads, shards, merge, index
build and save), passages/s, the ratio to the local run and the rate per worker. Each
shard's result row (its worker's pid and in-shard seconds) is read on its way to the driver,
which gives each worker's start-up (job start to its first shard, i.e. actor start + model
load) and its first shard against the rest; the workers' peak RSS (``VmHWM`` of each Ray
actor process, read while it runs; for the local engine the driver's own peak during the
job, reset before it) is the memory per worker. From the 2-worker Ray runs' per-worker
rates the script works out a capacity plan for 10M and 100M passages. Writes ``--out``
(default ``benchmarks/results/scale.md``) and prints it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from ragc import registry
from ragc.corpus import load_corpus, save_jsonl
from ragc.datasets import load_dataset
from ragc.engines import Engine, tasks
from ragc.engines.jobs import finished
from ragc.engines.ray import actor_shape  # no Ray import: CPU arithmetic only
from ragc.engines.run import local_threads
from ragc.eval.report import command_line, cpu_flags, machine_info
from ragc.retrievers.dense import _PQ_BITS, auto_nlist, auto_pq_m, training_size

BUDGET = 0.33
RAY_CPUS = 2
PLAN_SIZES = (10_000_000, 100_000_000)
PLAN_SHARD = 10_000
PLAN_WORKERS = (8, 32, 128)
FLAT_MAX = 1_000_000  # the plan's flat index up to ~1M passages, IVF-PQ beyond
JOBS = {"embed": "dense embedding (index build)", "compress": f"llmlingua2 @ {BUDGET}"}
SHORT = {"embed": "embedding", "compress": "llmlingua2"}
ENGINES: dict[str, Callable[[], Engine]] = {
    "local": lambda: Engine("local"),
    "ray-1": lambda: Engine("ray", workers=1),
    "ray-2": lambda: Engine("ray", workers=2),
}


# -- measuring ------------------------------------------------------------------------
def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of process ``pid`` (``VmHWM``, Linux), else its current RSS."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except Exception:  # psutil missing or the process already gone
        return None


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); False if it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def wait_gone(pids: set[int], timeout: float = 30.0) -> None:
    """Wait (a little) for the Ray actor processes to exit after ``ray.shutdown``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = set()
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.add(pid)
            except ProcessLookupError:
                pass
            except PermissionError:
                alive.add(pid)
        if not alive:
            return
        pids = alive
        time.sleep(0.5)


def folder_bytes(path: Path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in path.rglob(pattern) if f.is_file())


def run_job(job: str, engine: Engine, corpus: Path, out: Path, shard_size: int) -> dict[str, Any]:
    """One job on one engine, timed; each shard's result row is kept as it reaches the driver."""
    rows: list[dict[str, Any]] = []
    real = tasks.run_shards

    def spy(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        theirs = kwargs.get("on_result")

        def seen(result: dict[str, Any]) -> None:
            pid = int(result["pid"])
            rows.append({**result, "arrived": time.perf_counter(), "peak_mb": peak_rss_mb(pid)})
            if theirs is not None:
                theirs(result)

        return real(*args, **{**kwargs, "on_result": seen})

    rss0 = current_rss_mb()
    reset = engine.name == "local" and reset_peak_rss()
    totals: dict[str, Any] = {}
    with mock.patch.object(tasks, "run_shards", spy):
        t0 = time.perf_counter()
        if job == "embed":
            retriever = registry.create("retriever", "dense")
            tasks.build_index(corpus, out, retriever, engine, shard_size=shard_size)
        else:
            totals = tasks.compress_corpus(corpus, out, "llmlingua2", BUDGET, engine, shard_size=shard_size)
        t1 = time.perf_counter()
    if engine.name == "local":
        driver_peak = peak_rss_mb(os.getpid()) if reset else None
        for r in rows:  # the local worker is this process: its peak is the driver's during the job
            r["peak_mb"] = driver_peak
    return {"job": job, "t0": t0, "t1": t1, "rows": rows, "rss0": rss0, "totals": totals, "out": out}


def summarise(run: dict[str, Any], n: int, local_wall: float | None) -> dict[str, Any]:
    """Wall and per-worker numbers of one run from its shard rows."""
    wall = run["t1"] - run["t0"]
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for r in sorted(run["rows"], key=lambda r: r["arrived"]):
        by_pid.setdefault(int(r["pid"]), []).append(r)
    workers = max(1, len(by_pid))
    startup, first, rest, in_shard_rates, peaks = [], [], [], [], []
    for rs in by_pid.values():
        startup.append(rs[0]["arrived"] - rs[0]["seconds"] - run["t0"])
        first.append(rs[0]["seconds"])
        rest += [r["seconds"] for r in rs[1:]]
        steady = rs[1:] or rs  # past the first shard (which loads the model), if there are more
        in_shard_rates.append(sum(r["rows"] for r in steady) / max(1e-9, sum(r["seconds"] for r in steady)))
        peaks += [r["peak_mb"] for r in rs if r.get("peak_mb") is not None]
    last = max((r["arrived"] for r in run["rows"]), default=run["t1"])
    return {
        "wall": wall,
        "rate": n / wall,
        "vs_local": wall / local_wall if local_wall else 1.0,
        "workers": workers,
        "per_worker": n / wall / workers,
        "startup": sum(startup) / len(startup) if startup else math.nan,
        "first": sum(first) / len(first) if first else math.nan,
        "rest": sum(rest) / len(rest) if rest else math.nan,
        "in_shard": sum(in_shard_rates) / len(in_shard_rates) if in_shard_rates else math.nan,
        "after": run["t1"] - last,
        "peak_mb": max(peaks) if peaks else None,
        "shards": len(run["rows"]),
    }


def same_output(job: str, a: Path, b: Path, shards: int) -> str:
    """How far two runs' shard outputs differ (they should not, whichever engine ran them)."""
    import numpy as np

    from ragc.engines.jobs import shard_stem
    from ragc.engines.workers import read_parquet_rows

    if job == "embed":
        from safetensors.numpy import load_file

        diff = 0.0
        for i in range(shards):
            va = load_file(str(shard_stem(a, i).with_suffix(".safetensors")))["vectors"]
            vb = load_file(str(shard_stem(b, i).with_suffix(".safetensors")))["vectors"]
            diff = max(diff, float(np.abs(va - vb).max()) if va.size else 0.0)
        return f"max |vector difference| {diff:.1e}"
    same = total = 0
    for i in range(shards):
        ra = read_parquet_rows(shard_stem(a, i).with_suffix(".parquet"))
        rb = read_parquet_rows(shard_stem(b, i).with_suffix(".parquet"))
        same += sum(x["compressed"] == y["compressed"] for x, y in zip(ra, rb))
        total += max(len(ra), len(rb))
    return f"{same}/{total} compressed texts identical"


# -- formatting -----------------------------------------------------------------------
def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---", *("---:" for _ in header[1:])]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def size(b: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b:.0f} B"


def num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def hours(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:,.1f} h" if h < 48 else f"{h:,.0f} h ({h / 24:,.1f} d)"


# -- the capacity plan ----------------------------------------------------------------
def plan(measured: dict[str, Any]) -> list[str]:
    dim = measured["dim"]
    pq_m = auto_pq_m(dim)
    rate = {job: measured["ray-2"][job]["per_worker"] for job in JOBS}
    steady = {job: measured["ray-2"][job]["in_shard"] for job in JOBS}
    mem = {job: measured["ray-2"][job]["peak_mb"] for job in JOBS}
    cols = [f"{n // 1_000_000}M passages" for n in PLAN_SIZES]
    rows: list[list[str]] = []

    def add(label: str, f: Callable[[int], str]) -> None:
        rows.append([label, *(f(n) for n in PLAN_SIZES)])

    def index_bytes(n: int) -> tuple[str, float]:
        if n <= FLAT_MAX:
            return "flat", n * dim * 4
        nlist = auto_nlist(n)
        return "ivfpq", n * (pq_m + 8) + nlist * dim * 4 + 2**_PQ_BITS * dim * 4

    add(f"shards of {PLAN_SHARD:,} passages", lambda n: f"{math.ceil(n / PLAN_SHARD):,}")
    add(
        "index type (flat up to ~1M, IVF-PQ beyond)",
        lambda n: "flat" if n <= FLAT_MAX else f"IVF-PQ, nlist {auto_nlist(n):,}, pq_m {pq_m}",
    )
    add("index.faiss on disk and in RAM", lambda n: size(index_bytes(n)[1]))
    add(f"(flat for comparison: n x {dim} x 4 B)", lambda n: size(n * dim * 4))
    add(
        "IVF training sample held by the driver",
        lambda n: size(training_size(n, auto_nlist(n), True) * dim * 4) if n > FLAT_MAX else "-",
    )
    add("passage text (corpus JSONL)", lambda n: size(n * measured["jsonl_bytes"]))
    add("index passages.jsonl", lambda n: size(n * measured["index_passages_bytes"]))
    add(
        "embedding shards kept in the job folder (safetensors + Parquet)",
        lambda n: size(n * measured["embed_shard_bytes"]),
    )
    add("compressed corpus (Parquet shards)", lambda n: size(n * measured["compress_shard_bytes"]))
    add("driver RAM for the merged passages (Python objects)", lambda n: size(n * measured["py_bytes"]))
    add("RAM per embedding worker (measured, constant in n)", lambda n: num(mem["embed"], "{:,.0f} MB"))
    add("RAM per llmlingua2 worker (measured, constant in n)", lambda n: num(mem["compress"], "{:,.0f} MB"))
    for job, label in SHORT.items():
        for w in PLAN_WORKERS:
            add(f"{label}, {w} workers", lambda n, w=w, job=job: hours(n / (rate[job] * w)))
    return [
        "## Capacity plan: 10M and 100M passages",
        "",
        f"Worked out from this run's 2-worker Ray per-worker rates: embedding "
        f"{rate['embed']:.1f} passages/s per worker, llmlingua2 {rate['compress']:.1f} passages/s per "
        f"worker (wall rates, fixed costs included; each worker an actor with "
        f"{measured['actor_cpus']:.2f} CPU and {measured['actor_threads']} torch thread(s) of this CPU "
        "kind). Hours assume the rate stays linear in workers and passages of this length "
        f"(mean {measured['jsonl_bytes']:.0f} bytes of JSONL per passage); the driver's merge and index "
        "build after the shards (IVF-PQ k-means training and adding) are not measured here. At the "
        "in-shard (steady) rates instead, "
        + ", ".join(f"{SHORT[j]} {steady[j]:.1f} p/s per worker" for j in JOBS)
        + ", the hours would be "
        + " and ".join(f"{100 * (1 - rate[j] / steady[j]):.0f}%" for j in JOBS)
        + " lower: the share of these short runs that went to fixed costs.",
        "",
        *table(["", *cols], rows),
        "",
        "- Index: FAISS IVF-PQ with 8-bit codes stores n x (pq_m + 8) bytes (codes + 64-bit ids in "
        f"the inverted lists) plus nlist x {dim} x 4 bytes of coarse centroids and 256 x {dim} x 4 bytes "
        f"of PQ codebooks; pq_m = {pq_m} is `auto_pq_m({dim})`, nlist is `auto_nlist(n)` (~4 sqrt(n)). "
        "It trains on a seeded sample of `training_size` vectors (256 per list), which the driver "
        "holds while training. Its recall at these sizes is not measured here.",
        "- Text: the corpus JSONL, the index's `passages.jsonl` and the job folder's Parquet shards "
        "each hold the passage text again; sizes are this run's bytes per passage times n.",
        f"- Driver RAM: `build_index` merges every shard's passages into one Python list "
        f"({measured['py_bytes']:.0f} bytes per passage, measured with tracemalloc loading this corpus) "
        "before indexing and saving them, so the driver, not the workers, bounds the corpus size.",
        f"- Worker RAM: the peak RSS (`VmHWM`) of the Ray actor processes of the 2-worker runs (Ray, "
        f"torch and the model, shards of {measured['shard_size']} passages); a 10,000-passage shard "
        "adds its own text and vectors (a few tens of MB).",
        "",
        "**GPU workers (an expectation, not measured here).** A GPU worker would be an actor with "
        "`num_gpus=1` holding the encoder or the llmlingua2 classifier on the device, with batch "
        "sizes raised from 64 (encoder) / 16 (compressor) to the hundreds; both models are small "
        "BERT-style encoders, so one GPU should do the work of many CPU workers, and the hours "
        "above then shrink by that (unmeasured) factor; the rates to use come from a GPU run. "
        "Reading and writing the Parquet/safetensors shards and the driver's merge stay on CPU and "
        "become the larger share. With faiss-gpu the IVF-PQ k-means training on the "
        "`training_size` sample moves to the GPU too (ragc moves flat and IVF indexes to the GPU "
        "when faiss-gpu sees one).",
        "",
    ]


# -- main -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=2000, help="SQuAD dev passages (default 2000)")
    p.add_argument("--shard-size", type=int, default=250, help="passages per shard (default 250)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.md"), help="report file")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # Ray workers inherit it
    if args.n < 2 or args.shard_size < 1:
        print("--n must be >= 2 and --shard-size >= 1", file=sys.stderr)
        return 2
    passages = list(load_dataset("squad-dev").corpus)[: args.n]
    n = len(passages)
    shards = math.ceil(n / args.shard_size)
    if shards < 2:
        print(
            f"{n} passages in shards of {args.shard_size} give one shard: lower --shard-size.",
            file=sys.stderr,
        )
        return 2

    measured: dict[str, Any] = {"shard_size": args.shard_size}
    runs: dict[str, dict[str, dict[str, Any]]] = {e: {} for e in ENGINES}
    startup: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ragc-scale-") as tmp:
        root = Path(tmp)
        corpus = save_jsonl(passages, root / "corpus.jsonl")
        measured["jsonl_bytes"] = corpus.stat().st_size / n
        tracemalloc.start()
        held = load_corpus(corpus)
        measured["py_bytes"] = tracemalloc.get_traced_memory()[0] / n
        tracemalloc.stop()
        del held

        def go(engine: str) -> None:
            for job in JOBS:
                print(f"[scale] {job} on {engine}", file=sys.stderr)
                runs[engine][job] = run_job(
                    job, ENGINES[engine](), corpus, root / f"{job}-{engine}", args.shard_size
                )

        go("local")
        ray = None
        try:
            already = "ray" in sys.modules
            t0 = time.perf_counter()
            import ray

            startup["import"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ray.init(
                num_cpus=RAY_CPUS,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},  # as the engine does
            )
            startup["init"] = time.perf_counter() - t0
            startup["already_imported"] = already
            go("ray-1")
            go("ray-2")
        finally:
            if ray is not None and ray.is_initialized():
                ray.shutdown()
                actors = {
                    int(r["pid"]) for e in ("ray-1", "ray-2") for j in runs[e].values() for r in j["rows"]
                }
                wait_gone(actors - {os.getpid()})

        local_out = runs["local"]["embed"]["out"]
        measured["dim"] = int((finished(local_out, 0) or {})["dimension"])
        measured["index_passages_bytes"] = (local_out / "passages.jsonl").stat().st_size / n
        measured["embed_shard_bytes"] = folder_bytes(local_out / "shards", "part-*.[ps]*") / n
        compress_out = runs["local"]["compress"]["out"]
        measured["compress_shard_bytes"] = folder_bytes(compress_out / "shards", "part-*.parquet") / n
        agree = {
            job: same_output(job, runs["local"][job]["out"], runs["ray-2"][job]["out"], shards)
            for job in JOBS
        }
        totals = runs["local"]["compress"]["totals"]

    summary = {
        e: {
            job: summarise(
                runs[e][job], n, None if e == "local" else runs["local"][job]["t1"] - runs["local"][job]["t0"]
            )
            for job in JOBS
        }
        for e in ENGINES
    }
    measured.update(summary)
    per, threads = actor_shape(float(RAY_CPUS), 2)
    measured["actor_cpus"], measured["actor_threads"] = per, threads

    command = command_line("python benchmarks/scale.py", sys.argv[1:] if argv is None else argv)
    lines = [
        f"# Sharded engines at scale: local vs Ray, {n:,} SQuAD dev passages in shards of {args.shard_size}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_info()}; CPU flags: {cpu_flags()}",
        "",
        f"Ray fixed start-up: `import ray` {startup['import']:.1f} s"
        + (" (already imported)" if startup["already_imported"] else "")
        + f", `ray.init(num_cpus={RAY_CPUS})` {startup['init']:.1f} s (once, before the Ray runs; "
        "not in their wall times).",
        "",
    ]
    shapes = {
        "local": f"1 worker, {local_threads()} threads",
        "ray-1": "1 actor, {:.2f} CPU, {} threads".format(*actor_shape(float(RAY_CPUS), 1)),
        "ray-2": f"2 actors, {per:.2f} CPU, {threads} thread(s) each",
    }
    for job, title in JOBS.items():
        rows = []
        for e in ENGINES:
            s = summary[e][job]
            rows.append(
                [
                    e,
                    shapes[e],
                    f"{s['wall']:.1f}",
                    f"{s['rate']:.1f}",
                    f"{s['vs_local']:.2f}",
                    f"{s['per_worker']:.1f}",
                    f"{s['in_shard']:.1f}",
                    f"{s['startup']:.1f}",
                    f"{s['first']:.2f} / {num(s['rest'], '{:.2f}')}",
                    f"{s['after']:.2f}",
                    num(s["peak_mb"], "{:,.0f}"),
                ]
            )
        r1, r2 = summary["ray-1"][job]["wall"], summary["ray-2"][job]["wall"]
        lines += [
            f"## {title}",
            "",
            *table(
                [
                    "engine",
                    "workers",
                    "wall s",
                    "passages/s",
                    "x local",
                    "p/s per worker",
                    "in-shard p/s per worker",
                    "start-up s",
                    "first / other shard s",
                    "after shards s",
                    "peak RSS MB per worker",
                ],
                rows,
            ),
            "",
            f"Ray overhead (1 worker / local): {summary['ray-1'][job]['vs_local']:.2f}x the wall time; "
            f"2 workers over 1: {r1 / r2:.2f}x speed-up. Local vs 2-worker Ray output: {agree[job]}.",
            "",
        ]
    if totals.get("source_tokens"):
        lines += [
            f"llmlingua2 kept {totals['kept_tokens']:,} of {totals['source_tokens']:,} tokens "
            f"({totals['kept_tokens'] / totals['source_tokens']:.2f}; decoder tokenizer qwen2.5-0.5b).",
            "",
        ]
    lines += [
        "Wall s: the whole `build_index` / `compress_corpus` call into a fresh folder (planning, "
        "worker start, the shards, then merging; for the index also building and saving the flat "
        "FAISS index). x local: wall / the local run's. p/s per worker: passages/s / workers. "
        "In-shard p/s per worker: a worker's passages / the seconds its shards took, past its first "
        "shard (no scheduling, no model load): the steady rate. Start-up s: job start to each worker's first "
        "shard starting (its first result's arrival minus that shard's seconds: planning, Ray Data "
        "and actor start, the worker's constructor), mean over workers. First / other shard s: a "
        "worker's first shard vs the mean of its others, each worker's mean; the workers load their "
        "models in their constructor (in start-up), so the first shard holds only warm-up. After shards s: "
        "last shard result to the call's return (merge, index build, save). Peak RSS: `VmHWM` of "
        "each Ray actor process read as its results arrive, the largest; for local, the driver's own "
        "peak during the job (reset before it; it includes the driver's corpus and dataset). Runs in "
        "this order: local (embed, compress), then Ray start-up, ray-1, ray-2, on a machine shared "
        "with other work: small differences are noise.",
        "",
        *plan(measured),
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
