"""``secateurs report``: a bench directory's results as CSV, Markdown, PNG plots and one HTML page.

Input: a bench output directory (``results.jsonl``, and the ``suite.json`` / ``environment.json`` the
runner writes beside it), or a results file ``NAME.jsonl`` (then ``NAME.suite.json`` and
``NAME.environment.json`` are read when present, e.g. the copies committed under ``results/``).

Output (the directory itself by default)::

    results.csv        mean and std over seeds of every aggregate, one line per model × method × sparsity
    results.md         the same as a Markdown table, with links to the plots
    plots/NAME.png     accuracy-vs-sparsity, accuracy-vs-macs, accuracy-vs-latency, accuracy-vs-epochs,
                       layer-sparsity, channel-sensitivity (each only when the rows hold its data)
    report.html        everything above in one self-contained page, plus the suite's configuration,
                       the machine and the software versions

Bad input is a `RunDirError` (exit 2): a missing or empty directory, no results file, no complete row.
A torn last line (a killed run) is ignored with a warning, which the page repeats.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secateurs.bench import plot_data, plots
from secateurs.bench.environment import ENVIRONMENT_FILE
from secateurs.bench.html import Page, Table, render
from secateurs.bench.plots import Plot, PlotStyle
from secateurs.bench.results import ResultRow, ResultsFile
from secateurs.bench.table import aggregate, csv_text, markdown, text_cells
from secateurs.errors import RunDirError, UsageError
from secateurs.io.files import atomic_write_bytes
from secateurs.latency.machine import machine_facts
from secateurs.runs.directory import versions

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SUITE_FILE = "suite.json"
PLOT_NAMES = (
    "accuracy-vs-sparsity",
    "accuracy-vs-macs",
    "accuracy-vs-latency",
    "accuracy-vs-epochs",
    "layer-sparsity",
    "channel-sensitivity",
)


@dataclass(frozen=True)
class ReportOptions:
    out: Path | None = None
    """Where to write (default: the bench directory; required when the source is a file)."""
    run_key: str | None = None
    """The cell whose per-layer sparsity / channel sensitivity is drawn (default: the first that has it)."""
    log_remaining: bool | None = None
    """Accuracy-vs-sparsity on a log axis of weights left: None decides (any sparsity above 0.9)."""
    style: PlotStyle = field(default_factory=PlotStyle)


@dataclass(frozen=True)
class Source:
    """A results file with what is recorded beside it."""

    name: str
    results: Path
    rows: list[ResultRow]
    suite: dict[str, Any] | None
    environment: dict[str, Any] | None
    notes: list[str]


@dataclass(frozen=True)
class Report:
    out: Path
    files: list[Path]
    plots: list[Plot]
    notes: list[str]


def torn_tail(path: Path) -> int:
    """Bytes after the last newline of ``path`` that are not blank (a row cut by a kill); 0 if none."""
    tail = path.read_bytes().rpartition(b"\n")[2]
    return len(tail) if tail.strip() else 0


def _side_file(path: Path, what: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path} ({what}) is not readable JSON: {error}") from None
    return value if isinstance(value, dict) else None


def locate(source: Path) -> tuple[Path, Path, Path]:
    """The results file, suite file and environment file for ``source`` (a directory or a ``.jsonl``)."""
    source = Path(source)
    if not source.exists():
        raise RunDirError(
            f"{source} does not exist; expected a bench output directory (holding {RESULTS_FILE}) or a .jsonl file"
        )
    if source.is_file():
        stem = source.with_suffix("")
        return source, stem.with_name(f"{stem.name}.suite.json"), stem.with_name(f"{stem.name}.environment.json")
    results = source / RESULTS_FILE
    if not results.is_file():
        state = "is empty" if not any(source.iterdir()) else f"has no {RESULTS_FILE}"
        raise RunDirError(
            f"{source} {state}; expected a bench output directory (run `secateurs bench SUITE --out {source}`)"
        )
    return results, source / SUITE_FILE, source / ENVIRONMENT_FILE


def load_source(source: Path) -> Source:
    """Read the rows (up to the last complete one) and the side files; `RunDirError` if there is no row."""
    results, suite_path, environment_path = locate(source)
    if not results.read_bytes().rpartition(b"\n")[0].strip():
        raise RunDirError(f"{results} holds no complete result row; run (or finish) the suite first")
    notes = []
    torn = torn_tail(results)
    if torn:  # ResultsFile.read logs the warning; the page repeats it
        notes.append(
            f"{results.name}: an incomplete last line ({torn} bytes, left by an interrupted run) was ignored; "
            "re-run the bench command to finish the grid."
        )
    rows = ResultsFile(results).read()  # every row parsed: a bad one is a RunDirError naming it
    if not rows:
        raise RunDirError(f"{results} holds no complete result row; run (or finish) the suite first")
    suite = _side_file(suite_path, "suite configuration")
    if suite is None:
        notes.append(f"No suite configuration was found ({suite_path.name}); the configuration section is empty.")
    environment = _side_file(environment_path, "machine facts")
    name = str(suite.get("name")) if suite and suite.get("name") else rows[0].suite
    return Source(name, results, rows, suite, environment, notes)


def make_plots(rows: Sequence[ResultRow], options: ReportOptions) -> list[Plot]:
    style = options.style
    return [
        plots.accuracy_vs_sparsity(rows, style, options.log_remaining),
        plots.accuracy_vs_macs(rows, style),
        plots.accuracy_vs_latency(rows, style),
        plots.accuracy_vs_epochs(rows, style),
        plots.layer_sparsity(rows, style, options.run_key),
        plots.channel_sensitivity(rows, style, options.run_key),
    ]


def _facts(values: dict[str, Any], keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(label, str(values[key])) for key, label in keys if values.get(key) is not None]


MACHINE_KEYS = (
    ("cpu_model", "CPU"),
    ("logical_cores", "logical cores"),
    ("usable_cores", "usable cores"),
    ("torch_threads", "torch threads"),
    ("memory_gib", "RAM (GiB)"),
    ("os", "OS"),
    ("cuda", "CUDA available"),
)
VERSION_KEYS = tuple((key, key) for key in ("secateurs", "torch", "torch_pruning", "python", "platform"))


def environment_sections(source: Source) -> list[tuple[str, list[tuple[str, str]]]]:
    """Machine and version tables: as recorded by the bench run, and of the machine rendering the report."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    latency_threads = sorted(
        {
            row.metrics.latency_ms.threads
            for row in source.rows
            if row.metrics.latency_ms and row.metrics.latency_ms.threads
        }
    )
    recorded = source.environment
    if recorded is not None:
        machine = _facts(recorded.get("machine") or {}, MACHINE_KEYS)
        machine += _facts(recorded, (("jobs", "parallel jobs (--jobs)"), ("threads_per_job", "threads per job")))
        if latency_threads:
            machine.append(("threads during latency timing", ", ".join(map(str, latency_threads))))
        sections.append((f"Machine that ran the suite (recorded {recorded.get('recorded', '?')})", machine))
        sections.append(("Software that ran the suite", _facts(recorded.get("versions") or {}, VERSION_KEYS)))
    current = _facts(machine_facts(), MACHINE_KEYS)
    if recorded is None and latency_threads:
        current.append(("threads during latency timing (from the rows)", ", ".join(map(str, latency_threads))))
    title = "Machine that rendered this report"
    if recorded is None:
        title += " (the suite recorded none: it may differ from the one that measured)"
    sections.append((title, current))
    sections.append(("Software that rendered this report", _facts(versions(), VERSION_KEYS)))
    return sections


def layer_table(rows: Sequence[ResultRow], run_key: str | None) -> tuple[str, Table] | None:
    row = plot_data.choose_row(rows, run_key, "layers")
    counts = plot_data.layer_counts(row) if row is not None else []
    if row is None or not counts:
        return None
    body = [(c.name, f"{c.kept:,}", f"{c.total:,}", f"{100 * c.removed_fraction:.2f}") for c in counts]
    return f"Per-layer counts of {row.key}", Table(("layer", "kept", "total", "removed %"), body)


def build_page(source: Source, plot_list: Sequence[Plot], options: ReportOptions, notes: Sequence[str]) -> Page:
    table = aggregate(source.rows)
    header, cells = text_cells(table)
    suite = source.suite or {}
    pruned = [row for row in source.rows if row.label != plot_data.DENSE]
    summary = [
        ("suite", source.name),
        ("results", str(source.results)),
        ("rows", f"{len(source.rows)} ({len(pruned)} pruned cells, {len(source.rows) - len(pruned)} dense)"),
        ("models", ", ".join(plot_data.models(source.rows))),
        ("methods", ", ".join(label for label in plot_data.labels(source.rows) if label != plot_data.DENSE)),
        ("seeds", ", ".join(str(s) for s in sorted({row.seed for row in source.rows}))),
        ("generated", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")),
    ]
    extra = layer_table(source.rows, options.run_key)
    return Page(
        title=f"secateurs report: {source.name}",
        subtitle=str(suite.get("description") or "benchmark suite results"),
        results=Table(header, cells),
        plots=plot_list,
        notes=notes,
        summary=summary,
        environment=environment_sections(source),
        configuration=source.suite,
        configuration_note="The suite as the bench runner resolved it (suite.json)." if source.suite else "",
        extra_tables=(extra,) if extra else (),
    )


def results_markdown(source: Source, plot_list: Sequence[Plot]) -> str:
    description = (source.suite or {}).get("description")
    lines = [f"# {source.name}", ""]
    if description:
        lines += [str(description), ""]
    lines += [markdown(aggregate(source.rows)), ""]
    for plot in plot_list:
        if plot.png is not None:
            lines += [f"![{plot.title}](plots/{plot.name}.png)", "", plot.caption, ""]
    return "\n".join(lines)


def write_report(source_path: Path, options: ReportOptions | None = None) -> Report:
    """Read ``source_path``, render everything and write it to ``options.out`` (see the module docstring)."""
    options = options or ReportOptions()
    source_path = Path(source_path)
    if options.out is None and source_path.is_file():
        raise UsageError(f"{source_path} is a file: pass --out DIR to say where the report goes")
    source = load_source(source_path)
    if options.run_key is not None and options.run_key not in {row.key for row in source.rows}:
        keys = [row.key for row in source.rows if row.label != plot_data.DENSE][:5]
        raise UsageError(
            f"--run {options.run_key!r} is not a cell of {source.results}; cells include: {', '.join(keys)}"
        )
    out = Path(options.out) if options.out is not None else source_path
    plot_list = make_plots(source.rows, options)
    notes = list(source.notes)
    jobs = plot_data.parallel_jobs(source.rows)
    if jobs > 1:
        notes.append(f"Cells ran up to {jobs} at a time (bench --jobs): their latencies were measured under load.")
        log.warning("%s", notes[-1])
    written = []
    for plot in plot_list:
        path = out / "plots" / f"{plot.name}.png"
        if plot.png is None:
            path.unlink(missing_ok=True)  # a plot from an earlier report whose data is gone
            continue
        atomic_write_bytes(path, plot.png)
        written.append(path)
    table = aggregate(source.rows)
    for name, text in (
        ("results.csv", csv_text(table)),
        ("results.md", results_markdown(source, plot_list)),
        ("report.html", render(build_page(source, plot_list, options, notes))),
    ):
        atomic_write_bytes(out / name, text.encode("utf-8"))
        written.append(out / name)
    return Report(out, written, plot_list, notes)
