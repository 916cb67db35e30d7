"""``longcot verify``: check and curate samples; ``longcot export``: write training files from records."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import ConfigFile, NoProgress, RunsDir, SetPairs, out, run_stage, validated
from longcot.errors import InputError

FORMATS_HELP = "messages (OpenAI chat JSONL), sharegpt (ShareGPT JSON) or parquet; repeat for several."


@app.command("verify")
def verify_command(
    input: str = typer.Option(..., "--input", "-i", help="Samples to verify (.jsonl, .parquet or a directory)."),
    output: str = typer.Option(..., "--output", "-o", help="Kept records; the rejected go next to them."),
    export: Optional[list[str]] = typer.Option(None, "--export", help=f"Also export the kept traces: {FORMATS_HELP}"),
    export_dir: Optional[str] = typer.Option(None, help="Where exports go (default: the run directory)."),
    keep_all: bool = typer.Option(False, "--keep-all", help="Keep every verdict, not only correct ones."),
    config: ConfigFile = None,
    set_: SetPairs = None,
    runs_dir: RunsDir = "runs",
    no_progress: NoProgress = False,
) -> None:
    """Verify each sample's final answer, curate (correct only, duplicates, decontamination, length), report."""
    from longcot.verify.config import VerifyConfig

    flags = {"keep_correct_only": False if keep_all else None, "export": {"formats": export or None, "dir": export_dir}}
    run_stage("verify", VerifyConfig, config, set_, flags, input_path=input, output=output, runs_dir=runs_dir,
              progress=not no_progress, artifacts=True)


@app.command("export")
def export_command(
    input: str = typer.Option(..., "--input", "-i", help="Records to export (any stage's output)."),
    output_dir: str = typer.Option(..., "--output-dir", "-o", help="Directory for the training files."),
    format: list[str] = typer.Option(["messages"], "--format", "-f", help=FORMATS_HELP),
    field: str = typer.Option("response", help="response, or dlcot_response (falls back to response)."),
    style: str = typer.Option("raw", help="raw: as generated; think: <think>thought</think> then the solution; "
                              "reasoning_content: the thought in the message's reasoning_content (R1 templates)."),
    system: Optional[str] = typer.Option(None, help="System message put first in every conversation."),
    instruction: Optional[str] = typer.Option(None, help="Text after the problem (default: what train adds: the "
                                              "row's own instruction, else its domain's); '' for the bare problem."),
    include_incorrect: bool = typer.Option(False, "--include-incorrect", help="Also export traces whose verdict "
                                           "is known and not correct (left out by default)."),
) -> None:
    """Write records as training files for LLaMA-Factory, axolotl or TRL (plus a dataset_info.json)."""
    from longcot.dataflow import read_input
    from longcot.pipeline import check_output
    from longcot.recordfiles import RejectedWriter
    from longcot.verify.config import ExportConfig
    from longcot.verify.export import export_records, selected

    cfg = validated(ExportConfig, {"formats": format, "field": field, "style": style, "system": system,
                                   "instruction": instruction, "include_incorrect": include_incorrect}, "export options")
    if not Path(input).exists():
        raise InputError("no such file or directory", input)
    check_output(input, output_dir)
    bad_lines = Path(output_dir) / "rejected.jsonl"
    with RejectedWriter(bad_lines) as rejected:
        rows = read_input(input, "export", rejected)
        skipped = rejected.count
    if not skipped:
        bad_lines.unlink(missing_ok=True)
    written = export_records(rows, cfg, output_dir)
    _, counts = selected(rows, cfg)
    out.print(f"[bold]export[/]: {counts['exported']} of {len(rows)} records ({counts['correct']} correct, "
              f"{counts['unverified']} unverified"
              + (f", {counts['incorrect_exported']} incorrect" if counts["incorrect_exported"] else "")
              + f"); {counts['incorrect_left_out']} incorrect left out"
              + (" (--include-incorrect exports them)" if counts["incorrect_left_out"] else "")
              + (f"; {skipped} bad lines -> {bad_lines}" if skipped else ""), highlight=False)
    for fmt, path in written.items():
        out.print(f"  {fmt}: {path}")
