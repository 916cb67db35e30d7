"""``longcot dlcot``: segment and simplify long CoT traces (DLCoT)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import out, parse_overrides, print_result, stage_config


@app.command("dlcot")
def dlcot_command(
    input: str = typer.Option(..., "--input", "-i", help="Traces: longcot records, or a raw JSONL/Parquet file with "
                              "problem, reference_answer and response columns."),
    output: str = typer.Option(..., "--output", "-o", help="Output records (.jsonl, .parquet, or a directory)."),
    segmenter: Optional[str] = typer.Option(None, help="rules (default) or llm."),
    config: Optional[Path] = typer.Option(None, help="YAML with a dlcot: block (or a bare block)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a setting, e.g. policy.errors=remove_span."),
    runs_dir: str = typer.Option("runs", help="Where the run directory (report, manifest) is created."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Deconstruct long CoT traces: segment, drop unsolvable and redundant approaches, optimise error states."""
    from longcot.dlcot.config import DlcotConfig
    from longcot.pipeline import run_single_stage

    overrides = parse_overrides(set_)
    if segmenter:
        overrides["segmenter"] = segmenter
    overrides["input"] = input  # records or a raw trace file: the stage reads both
    cfg = stage_config(DlcotConfig, "dlcot", config, overrides)
    run_dir, result = run_single_stage("dlcot", cfg, input_path=None, output=output, runs_dir=runs_dir,
                                       progress=not no_progress)
    print_result(run_dir, result)
    summary = result.summary
    reasons = ", ".join(f"{k} {v}" for k, v in summary.get("skip_reasons", {}).items()) or "none"
    out.print(f"transformed {summary.get('transformed')}, skipped {summary.get('skipped')} ({reasons}); "
              f"median thought-token ratio {summary.get('median_token_ratio')}")
    out.print(f"report: {summary.get('report')}")

