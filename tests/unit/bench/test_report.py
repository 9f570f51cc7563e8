"""`secateurs report`: every plot path on rows shaped like each method's, the HTML page, and bad input."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import SUITE, accuracy, cell_row, dense_row, write_bench_dir

from conftest import assert_clean_error, run_cli
from secateurs.bench.html import Page, Table, render
from secateurs.bench.plots import SMALL, PlotStyle
from secateurs.bench.report import PLOT_NAMES, Report, ReportOptions, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = PlotStyle(dpi=30, panel_width=4.0, panel_height=3.0)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    directory = write_bench_dir(tmp_path_factory.mktemp("report") / "bench")
    return write_report(directory, ReportOptions(style=TINY))


def small_rows(*, latency: bool = False, layers: bool = True) -> list[dict[str, Any]]:
    """One model, the dense row and two cells: few panels, so rendering stays cheap."""
    rows = [dense_row("mlp", 0), cell_row("mlp", "lap", 0.5, 0), cell_row("mlp", "lap", 0.99, 0)]
    for row in rows:
        if not latency:
            row["metrics"].pop("latency_ms")
        if not layers:
            row.pop("method_info", None)
    return rows


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_plot_is_drawn_from_method_shaped_rows(full_report: Report) -> None:
    assert [plot.name for plot in full_report.plots] == list(PLOT_NAMES)
    for plot in full_report.plots:
        assert plot.png is not None, plot.caption
        width, height = png_size(plot.png)
        assert width >= 4.0 * 30 and height >= 2.5 * 30
        assert (full_report.out / "plots" / f"{plot.name}.png").read_bytes() == plot.png


def test_accuracy_vs_sparsity_uses_a_log_axis_of_weights_left(full_report: Report) -> None:
    plot = next(p for p in full_report.plots if p.name == "accuracy-vs-sparsity")
    mlp, resnet = plot.figure.axes
    assert mlp.get_title() == "mlp" and resnet.get_title() == "resnet20"
    assert mlp.get_xscale() == "log"
    assert mlp.xaxis_inverted()
    assert "left" in mlp.get_xlabel()
    lap = next(c for c in mlp.containers if c.get_label() == "lap").lines[0]  # errorbar: (data line, caps, bars)
    ys = list(lap.get_ydata())
    expected = [100 * sum(accuracy(s, seed, 0.01) for seed in (0, 1, 2)) / 3 for s in (0.5, 0.9, 0.99, 0.999)]
    assert ys == pytest.approx(expected, abs=1e-9)
    dense = next(line for line in mlp.get_lines() if str(line.get_label()).startswith("dense"))
    assert list(dense.get_ydata()) == pytest.approx([100 * sum(accuracy(0, s, 0) for s in (0, 1, 2)) / 3] * 2)


def test_linear_axis_when_asked(tmp_path: Path) -> None:
    directory = write_bench_dir(tmp_path / "bench", small_rows())
    report = write_report(directory, ReportOptions(log_remaining=False, style=TINY))
    plot = next(p for p in report.plots if p.name == "accuracy-vs-sparsity")
    assert plot.figure.axes[0].get_xscale() == "linear"
    assert "removed" in plot.figure.axes[0].get_xlabel()


def test_epoch_curves_and_channel_bands_hold_the_rows_numbers(full_report: Report) -> None:
    epochs = next(p for p in full_report.plots if p.name == "accuracy-vs-epochs")
    (ax,) = epochs.figure.axes
    infcop = next(c for c in ax.containers if c.get_label() == "infcop-if (rounds)").lines[0]
    assert list(infcop.get_xdata()) == [4.0, 5.0, 6.0, 7.0]  # 3 warm-up epochs + 1 per round
    channels = next(p for p in full_report.plots if p.name == "channel-sensitivity")
    curve, bars = channels.figure.axes
    assert curve.get_yscale() == "log"
    legend = [text.get_text() for text in curve.get_legend().get_texts()]
    assert legend[:3] == ["prune (3)", "implant (2)", "keep (5)"]  # the recorded decisions
    assert [t.get_text() for t in bars.get_yticklabels()] == ["conv1.weight", "layer1.0.conv1.weight"]


def test_layer_plot_follows_run_key(tmp_path: Path) -> None:
    directory = write_bench_dir(tmp_path / "bench", small_rows())
    report = write_report(directory, ReportOptions(run_key="mlp|lap|0.99|0", style=TINY))
    layers = next(p for p in report.plots if p.name == "layer-sparsity")
    assert "mlp|lap|0.99|0" in layers.caption
    (ax,) = layers.figure.axes
    widths = [patch.get_width() for patch in ax.patches]
    assert widths == pytest.approx([99.0, 99.0, 99.0])
    assert "Per-layer counts of mlp|lap|0.99|0" in (directory / "report.html").read_text()


def test_outputs_tables_and_self_contained_html(full_report: Report) -> None:
    out = full_report.out
    parsed = list(csv.DictReader((out / "results.csv").open()))
    assert len(parsed) == 2 + 4 * 3 + 1 + 2 * 2 + 1  # dense ×2 models, 3 methods × 4, campfire, 2 × 2 iterative, hap
    markdown = (out / "results.md").read_text()
    assert markdown.startswith("# fixture")
    assert "![Test accuracy vs sparsity](plots/accuracy-vs-sparsity.png)" in markdown
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(PLOT_NAMES)
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert references and all(ref.startswith(("data:", "#")) for ref in references), references
    assert "<script" not in page and "@import" not in page and "url(" not in page
    row = f"<td>mlp</td><td>lap</td><td>0.99</td><td>3</td><td>{100 * (accuracy(0.99, 1, 0.01)):.2f} ± 0.20</td>"
    assert row in page
    assert html.escape(json.dumps(SUITE["description"])) in page  # the suite configuration is on the page
    assert "Machine that rendered this report" in page and "torch threads" in page


def test_missing_optional_keys_skip_plots_with_a_note(tmp_path: Path) -> None:
    directory = write_bench_dir(tmp_path / "bench", small_rows(layers=False), suite=False)
    (directory / "plots").mkdir()
    (directory / "plots" / "channel-sensitivity.png").write_bytes(b"stale")
    report = write_report(directory, ReportOptions(style=TINY))
    drawn = {p.name for p in report.plots if p.png is not None}
    assert drawn == {"accuracy-vs-sparsity", "accuracy-vs-macs"}
    page = (directory / "report.html").read_text()
    assert "skipped: no row records a latency measurement" in page
    assert "skipped: no row has per-round history" in page
    assert "skipped: no cell records method_info.channel_scores" in page
    assert "skipped: no cell has per-layer counts" in page
    assert "No suite configuration was found" in page
    remaining = sorted(p.name for p in (directory / "plots").iterdir())
    assert remaining == ["accuracy-vs-macs.png", "accuracy-vs-sparsity.png"]  # the stale plot is gone


def test_parallel_rows_put_a_latency_caveat_on_the_page(tmp_path: Path) -> None:
    rows = small_rows(latency=True, layers=False)
    rows[1]["timings"]["jobs"] = 2
    directory = write_bench_dir(tmp_path / "bench", rows)
    report = write_report(directory, ReportOptions(style=TINY))
    assert any("up to 2 at a time" in note for note in report.notes)
    latency = next(p for p in report.plots if p.name == "accuracy-vs-latency")
    assert "not comparable" in latency.caption


def test_html_escapes_text_from_the_results() -> None:
    page = Page(title="<b>x</b>", subtitle="a & b", results=Table(["model"], [["<script>alert(1)</script>"]]), plots=[])
    text = render(page)
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a &amp; b" in text


def test_cli_writes_the_report_from_a_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "fixture.jsonl"
    results.write_text("".join(json.dumps(row) + "\n" for row in small_rows(layers=False)))
    (tmp_path / "fixture.suite.json").write_text(json.dumps(SUITE))
    code, out, err = run_cli(capsys, "report", str(results), "--out", str(tmp_path / "out"), "--small")
    assert code == 0, err
    assert "accuracy-vs-sparsity" in out
    assert (tmp_path / "out" / "report.html").is_file()
    assert html.escape(SUITE["description"]) in (tmp_path / "out" / "report.html").read_text()
    width, _ = png_size((tmp_path / "out" / "plots" / "accuracy-vs-macs.png").read_bytes())
    assert width == round(SMALL.panel_width * SMALL.dpi)  # one model, one panel


def test_truncated_last_line_is_ignored_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = small_rows(layers=False)
    directory = write_bench_dir(tmp_path / "bench", rows)
    with (directory / "results.jsonl").open("a") as handle:
        handle.write(json.dumps(cell_row("mlp", "lap", 0.3, 0))[:57])  # a row cut by a kill
    code, _, err = run_cli(capsys, "--verbose", "report", str(directory))
    assert code == 0, err
    assert "incomplete last line" in err
    parsed = list(csv.DictReader((directory / "results.csv").open()))
    assert len(parsed) == len({(r["model"], r["label"], r["sparsity"]) for r in rows})
    assert not any(r["sparsity"] == "0.3" for r in parsed)
    assert "an incomplete last line (57 bytes" in (directory / "report.html").read_text()


def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(*run_cli(capsys, "report", str(empty))[::2], "is empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    assert_clean_error(*run_cli(capsys, "report", str(other))[::2], "has no results.jsonl")
    assert_clean_error(*run_cli(capsys, "report", str(tmp_path / "missing"))[::2], "does not exist")
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "results.jsonl").write_text('{"key": "a|b')
    assert_clean_error(*run_cli(capsys, "report", str(torn))[::2], "no complete result row")
    assert not (torn / "report.html").exists()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "results.jsonl").write_text("not json\n")
    assert_clean_error(*run_cli(capsys, "report", str(garbage))[::2], "line 1 is not valid JSON")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "results.jsonl").write_text(json.dumps({"key": "a", "model": "mlp", "sparsity": 0.5}) + "\n")
    assert_clean_error(*run_cli(capsys, "report", str(incomplete))[::2], "row 1 ('a') lacks label")
    results = write_bench_dir(tmp_path / "bench", small_rows()) / "results.jsonl"
    assert_clean_error(*run_cli(capsys, "report", str(results))[::2], "pass --out")
    assert_clean_error(*run_cli(capsys, "report", str(results.parent), "--run", "nope")[::2], "--run 'nope'")
    assert not (results.parent / "report.html").exists()
