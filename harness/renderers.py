"""Renderers of a run's report: the terminal summary, ``report.md`` and ``report.html``.

Each one draws the same ``harness.report.Report``; adding a format is one class here
(and a line in ``file_renderers`` if it is written into the run folder).
"""

from __future__ import annotations

import base64
import html
import sys
from abc import ABC, abstractmethod
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.experiment import Section
from harness.report import Report


class Renderer(ABC):
    @abstractmethod
    def render(self, report: Report) -> str:
        """The whole report in this renderer's format."""


class TerminalRenderer(Renderer):
    """The run summary: how disturbed the run was, then every section marked for the
    summary, as rich tables (ANSI colours when the console is a terminal)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def render(self, report: Report) -> str:
        with self.console.capture() as captured:
            self.console.print(report.disturbance)
            for section in report.sections:
                if section.summary and section.rows:
                    self.console.print(self._table(section))
        return captured.get()

    @staticmethod
    def _table(section: Section) -> Table:
        table = Table(title=section.title, title_justify="left")
        for i, name in enumerate(section.header):
            left = i < 2 or section.title.startswith("Cases not run")
            table.add_column(name, justify="left" if left else "right")
        for row in section.rows:
            table.add_row(*row)
        return table


class MarkdownRenderer(Renderer):
    """``report.md``: tables in Markdown, plots linked beside it."""

    def render(self, report: Report) -> str:
        parts = [f"# {report.title}", "", report.facts, "", report.disturbance + ".", "",
                 f"## {report.machine_heading}", "",
                 self._table(["key", "value"], report.machine), "",
                 report.intro]
        for section in report.sections:
            parts += ["", f"## {section.title}"]
            if section.rows:
                parts += ["", self._table(section.header, section.rows)]
            if section.note:
                parts += ["", section.note]
            parts += [f"\n![{name}]({name})" for name in section.plots]
        if report.notes:
            parts += ["", "## Analysis notes", "", *[f"- {note}" for note in report.notes]]
        return "\n".join(parts) + "\n"

    @staticmethod
    def _table(header: list[str], body: list[list[str]]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                  for row in body]
        return "\n".join(lines)


HTML_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; max-width: 60em; }
"""


class HtmlRenderer(Renderer):
    """``report.html``: one file that opens offline, the plots inlined as data URIs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # where the plots are

    def render(self, report: Report) -> str:
        esc = html.escape
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>"
                 f"{esc(report.title)}</title><style>{HTML_STYLE}</style></head><body>"
                 f"<h1>{esc(report.title)}</h1>",
                 f"<p>{esc(report.facts)}</p>", f"<p>{esc(report.disturbance)}.</p>",
                 f"<h2>{esc(report.machine_heading)}</h2>",
                 self._table(["key", "value"], report.machine),
                 f"<p class='note'>{esc(report.intro)}</p>"]
        for section in report.sections:
            parts.append(f"<h2>{esc(section.title)}</h2>")
            if section.rows:
                parts.append(self._table(section.header, section.rows))
            if section.note:
                parts.append(f"<p class='note'>{esc(section.note)}</p>")
            parts += [self._figure(name) for name in section.plots]
        if report.notes:
            parts += ["<h2>Analysis notes</h2>", "<ul>",
                      *[f"<li>{esc(note)}</li>" for note in report.notes], "</ul>"]
        return "\n".join(parts) + "\n</body></html>\n"

    @staticmethod
    def _table(header: list[str], body: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in body)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    def _figure(self, name: str) -> str:
        data = base64.b64encode((self.folder / name).read_bytes()).decode()
        return (f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(name)}</figcaption></figure>")


def file_renderers(folder: Path) -> dict[str, Renderer]:
    """The report's files in a run folder, each with its renderer."""
    return {"report.md": MarkdownRenderer(), "report.html": HtmlRenderer(folder)}


def write_report(report: Report, folder: Path) -> None:
    for name, renderer in file_renderers(folder).items():
        (folder / name).write_text(renderer.render(report), encoding="utf-8")


def print_report(report: Report, console: Console) -> None:
    """The terminal summary, on ``console``'s file (stdout)."""
    sys.stdout.write(TerminalRenderer(console).render(report))
    sys.stdout.flush()
