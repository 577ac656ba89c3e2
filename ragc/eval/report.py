"""Tables and plots of evaluation summaries.

Everything here is formatting of :class:`~ragc.eval.runner.EvalSummary` values: a
fixed-width table for the terminal, a markdown report (table + the command that produced
it + a machine line) and a PNG plot. Plotting uses a bare matplotlib ``Figure`` (Agg),
so it works without a display and never changes pyplot's global backend.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ragc.eval.runner import EvalSummary

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass(frozen=True)
class Column:
    """One table column: header, how to read the value, and its number format."""

    header: str
    value: Callable[[EvalSummary], float | int | str | None]
    fmt: str = "{:.1f}"
    help: str = ""


def _recall(k: int) -> Callable[[EvalSummary], float | None]:
    return lambda s: s.recall.get(k)


def columns(summaries: Sequence[EvalSummary]) -> list[Column]:
    """The report columns; recall@k for every k any summary has."""
    ks = sorted({k for s in summaries for k in s.recall})
    return [
        Column("run", lambda s: s.name, "{}"),
        Column("n", lambda s: s.n, "{:d}", "questions"),
        *[Column(f"R@{k}", _recall(k), help=f"gold paragraph in the top {k} retrieved (%)") for k in ks],
        Column("EM", lambda s: s.em, help="exact match, SQuAD v1.1 normalisation (%)"),
        Column("F1", lambda s: s.f1, help="token F1, best over gold answers (%)"),
        Column("contained", lambda s: s.contained, help="a gold answer appears in the prediction (%)"),
        Column(
            "ans kept",
            lambda s: s.answer_kept,
            help="a gold answer appears in the context the decoder reads (%, text contexts only)",
        ),
        Column("prompt tok", lambda s: s.mean_prompt_tokens, "{:.0f}", "mean decoder prompt tokens"),
        Column("source tok", lambda s: s.mean_source_tokens, "{:.0f}", "mean tokens of the top-k passages"),
        Column("kept tok", lambda s: s.mean_kept_tokens, "{:.0f}", "mean context tokens after compression"),
        Column("rate", lambda s: s.mean_rate, "{:.2f}", "mean kept / source tokens"),
        Column("TTFT s", lambda s: s.mean_ttft, "{:.2f}", "mean retrieve + compress + prefill (s)"),
        Column("prefill s", lambda s: s.mean_prefill, "{:.2f}", "mean decoder prefill (s)"),
        Column("total s", lambda s: s.mean_total, "{:.2f}", "mean end-to-end latency (s)"),
        Column("peak MB", lambda s: s.max_peak_memory_mb, "{:.0f}", "max peak memory (MB)"),
        Column("cut", lambda s: s.truncated, "{:d}", "prompts truncated to fit the window"),
    ]


def _cell(col: Column, summary: EvalSummary) -> str:
    value = col.value(summary)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return col.fmt.format(value)


def _rows(summaries: Sequence[EvalSummary]) -> tuple[list[Column], list[list[str]]]:
    cols = columns(summaries)
    return cols, [[_cell(c, s) for c in cols] for s in summaries]


def format_table(summaries: Sequence[EvalSummary]) -> str:
    """Fixed-width table (run name left-aligned, numbers right-aligned)."""
    cols, rows = _rows(summaries)
    widths = [max(len(c.header), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    out = [line([c.header for c in cols]), "  ".join("-" * w for w in widths)]
    return "\n".join(out + [line(r) for r in rows])


def command_line(program: str, args: Sequence[str]) -> str:
    """The command that made a report, as a reader can run it: ``program`` (e.g.
    ``python benchmarks/x.py``) and its arguments, absolute paths made relative to the working
    directory or, outside it, to ``$RAGC_CACHE`` / ``~`` (no path of this machine is recorded)."""
    from ragc.paths import cache_dir

    cwd, cache, home = Path.cwd(), cache_dir().resolve(), Path.home()

    def clean(arg: str) -> str:
        head, eq, tail = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        p = Path(tail)
        if p.is_absolute():
            for root, name in ((cwd, ""), (cache, "$RAGC_CACHE"), (home, "~")):
                if p.is_relative_to(root):
                    rel = p.relative_to(root).as_posix()
                    tail = f"{name}/{rel}" if name else rel or "."
                    break
            else:
                tail = p.name
        return f"{head}{eq}{tail}"

    return shlex.join([*program.split(), *(clean(a) for a in args)])


def paired_table(pairs: Sequence[tuple[str, str, str]], runs: Path, title: str) -> list[str]:
    """A markdown section pairing runs on their shared questions: one row per ``(run,
    reference, metric)`` whose two run folders under ``runs`` exist (a paired bootstrap,
    :func:`ragc.eval.stats.compare_runs`); no section when no pair is there."""
    from ragc.eval.stats import compare_runs

    lines = []
    for run, ref, metric in pairs:
        if (runs / run / "predictions.jsonl").is_file() and (runs / ref / "predictions.jsonl").is_file():
            d = compare_runs(runs / ref, runs / run, metric)
            means = f"{d.mean_b:.1f} vs {d.mean_a:.1f}"
            lines.append(f"| {run} | {ref} | {metric.upper()} | {means} | {d.markdown_cells()} |")
    if not lines:
        return []
    return [
        f"## {title}",
        "",
        "| run | reference | metric | run vs reference | difference | 95% CI | better / tied / worse | |",
        "|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        "Paired bootstrap over the shared questions (10,000 resamples, seed 0; `ragc compare "
        "REFERENCE_RUN RUN` prints the same): a difference whose interval contains 0 is within "
        "the noise of this sample.",
        "",
    ]


def cpu_flags() -> str:
    """The CPU's vector and matrix extensions that decide the fast precision (for speed reports):
    fp32 width (avx2, avx512f), int8 dot products (avx_vnni, avx512_vnni, amx_int8), bf16."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    names = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    found = [f for f in names if f in flags]
    return ", ".join(found) or "none of avx2/avx512"


def machine_info() -> str:
    """One line: CPU count, torch and Python versions, OS and the UTC date."""
    try:
        import torch

        torch_version = str(torch.__version__)
        threads = f", torch threads {torch.get_num_threads()}"
    except ImportError:
        torch_version, threads = "not installed", ""  # the report still works without torch
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}){threads}, torch {torch_version}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, {date}"
    )


def markdown_table(summaries: Sequence[EvalSummary]) -> str:
    """A markdown table with one row per summary."""
    cols, rows = _rows(summaries)
    align = ["---", *("---:" for _ in cols[1:])]
    out = ["| " + " | ".join(c.header for c in cols) + " |", "| " + " | ".join(align) + " |"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def markdown_report(
    summaries: Sequence[EvalSummary],
    title: str,
    command: str,
    notes: str | Sequence[str] = (),
    image: str | None = None,
) -> str:
    """A markdown report: the table, the exact command, the machine, a column legend.

    ``notes`` (a paragraph or a list of bullet points) go after the legend; ``image``
    is an optional relative path of the plot to embed.
    """
    parts = [
        f"# {title}",
        f"Produced by:\n\n```bash\n{command}\n```",
        f"Machine: {machine_info()}",
        markdown_table(summaries),
    ]
    if image:
        parts.append(f"![{title}]({image})")
    legend = [f"- **{c.header}**: {c.help}" for c in columns(summaries) if c.help]
    parts.append("Columns:\n\n" + "\n".join(legend))
    if isinstance(notes, str):
        notes = [notes] if notes.strip() else []
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def plot(summaries: Sequence[EvalSummary], path: str | Path) -> Path:
    """Save a PNG: F1 vs mean prompt tokens (left) and mean TTFT split by stage (right)."""
    try:
        from matplotlib.figure import Figure  # lazy: importing matplotlib takes a while
    except ImportError as e:
        from ragc.errors import MissingDependencyError

        raise MissingDependencyError(
            "PNG plots need matplotlib: pip install 'ragc[report]'."
        ) from e

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_f1, ax_t = fig.subplots(1, 2, width_ratios=(1.2, 1))
    _plot_quality(ax_f1, summaries)
    _plot_ttft(ax_t, summaries)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return out


def _plot_quality(ax: Axes, summaries: Sequence[EvalSummary]) -> None:
    x = [s.mean_prompt_tokens for s in summaries]
    y = [s.f1 for s in summaries]
    ax.scatter(x, y, s=40, zorder=3)
    for s, xi, yi in zip(summaries, x, y, strict=True):
        ax.annotate(s.name, (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(xlabel="mean prompt tokens", ylabel="F1 (%)", title="Quality vs prompt length")
    ax.grid(alpha=0.3)


def _plot_ttft(ax: Axes, summaries: Sequence[EvalSummary]) -> None:
    names = [s.name for s in summaries]
    prefill = [s.mean_prefill for s in summaries]
    # TTFT = retrieve + compress + prefill; the summary keeps TTFT and prefill.
    before = [max(s.mean_ttft - s.mean_prefill, 0.0) for s in summaries]
    ax.barh(names, before, label="retrieve + compress")
    ax.barh(names, prefill, left=before, label="prefill")
    ax.invert_yaxis()
    ax.set(xlabel="mean time to first token (s)", title="TTFT")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
