"""``longcot report RUN_DIR``: (re)build a run's HTML report and trace inspector."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer

from longcot.cli import app
from longcot.cli.options import out


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="A run directory (holds manifest.json)."),
    open_: bool = typer.Option(False, "--open", help="Open the report in a browser."),
) -> None:
    """Build report.html and inspector.html in RUN_DIR (self-contained; no server needed)."""
    from longcot.report.render import build_report

    report, inspector = build_report(run_dir)
    out.print(f"report: {report}\ninspector: {inspector}")
    if open_:
        webbrowser.open(report.resolve().as_uri())
