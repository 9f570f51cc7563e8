"""A single self-contained HTML page: inline CSS, plots as base64 ``data:`` URIs, no script, no fetch.

The page opens from disk without a network: nothing in it refers to another file or host (a test
checks that no ``src``/``href`` leaves the page). Every text that comes from the results is escaped.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from secateurs.bench.plots import Plot

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0 auto; max-width: 1180px; padding: 1.5em; color: #1d2329; background: #fff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #d8dee4; padding-bottom: 0.2em; }
.subtitle { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.82em; }
th, td { border: 1px solid #d0d7de; padding: 0.2em 0.45em; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; } td:nth-child(-n+2), th:nth-child(-n+2) { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
table.facts td:first-child { text-align: left; color: #57606a; } table.facts td { text-align: left; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.9em; max-width: 60em; }
.note { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.5em 0.8em; margin: 0.4em 0; }
.skipped { color: #57606a; font-style: italic; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
nav a { margin-right: 1em; }
"""


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    css_class: str = ""


@dataclass(frozen=True)
class Page:
    """Everything `render` puts on the page, already formatted as text."""

    title: str
    subtitle: str
    results: Table
    plots: Sequence[Plot]
    notes: Sequence[str] = ()
    summary: Sequence[tuple[str, str]] = ()
    environment: Sequence[tuple[str, Sequence[tuple[str, str]]]] = ()
    """Headed key/value tables (machine that ran the suite, software versions, ...)."""
    configuration: dict[str, Any] | None = None
    configuration_note: str = ""
    extra_tables: Sequence[tuple[str, Table]] = field(default_factory=tuple)


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def table_html(table: Table) -> str:
    css = f' class="{escape(table.css_class)}"' if table.css_class else ""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in table.header)
    body = "\n".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    thead = f"<thead><tr>{head}</tr></thead>" if table.header else ""
    return f'<div class="scroll"><table{css}>{thead}<tbody>\n{body}\n</tbody></table></div>'


def facts_html(facts: Sequence[tuple[str, str]]) -> str:
    return table_html(Table((), [(key, value) for key, value in facts], "facts"))


def plot_html(plot: Plot) -> str:
    anchor = escape(plot.name)
    if plot.png is None:
        return f'<h3 id="{anchor}">{escape(plot.title)}</h3>\n<p class="skipped">{escape(plot.caption)}</p>'
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<h3 id="{anchor}">{escape(plot.title)}</h3>\n<figure><img alt="{escape(plot.title)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{escape(plot.caption)}</figcaption></figure>'
    )


def render(page: Page) -> str:
    """The whole HTML document as a string."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(page.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(page.title)}</h1>",
        f'<p class="subtitle">{escape(page.subtitle)}</p>',
    ]
    links = [("results", "Results"), ("plots", "Plots"), ("configuration", "Configuration"), ("environment", "Machine")]
    parts.append("<nav>" + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in links) + "</nav>")
    parts += [f'<div class="note">{escape(note)}</div>' for note in page.notes]
    if page.summary:
        parts.append(facts_html(page.summary))
    parts += ['<h2 id="results">Results</h2>', table_html(page.results)]
    for heading, table in page.extra_tables:
        parts += [f"<h3>{escape(heading)}</h3>", table_html(table)]
    parts.append('<h2 id="plots">Plots</h2>')
    parts += [plot_html(plot) for plot in page.plots]
    parts.append('<h2 id="configuration">Configuration</h2>')
    if page.configuration_note:
        parts.append(f"<p>{escape(page.configuration_note)}</p>")
    if page.configuration is not None:
        parts.append(f"<pre>{escape(json.dumps(page.configuration, indent=2, sort_keys=False))}</pre>")
    parts.append('<h2 id="environment">Machine and versions</h2>')
    for heading, facts in page.environment:
        parts += [f"<h3>{escape(heading)}</h3>", facts_html(facts)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
