"""``longcot dlcot``: segment and simplify long CoT traces (DLCoT)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import ConfigFile, NoProgress, RunsDir, SetPairs, out, run_stage


@app.command("dlcot")
def dlcot_command(
    input: str = typer.Option(..., "--input", "-i", help="Traces: longcot records, or a raw JSONL/Parquet file with "
                              "problem, reference_answer and response columns."),
    output: str = typer.Option(..., "--output", "-o", help="Output records (.jsonl, .parquet, or a directory)."),
    segmenter: Optional[str] = typer.Option(None, help="rules (default) or llm."),
    gold: Optional[str] = typer.Option(None, help="Gold segmentation JSONL to measure the simplification against "
                                       "(e.g. jobs/data/dlcot_gold/math500_gold.jsonl); prints per trace and in total."),
    gold_traces: Optional[str] = typer.Option(None, help="The trace file the gold was made from (default: --input)."),
    config: ConfigFile = None,
    set_: SetPairs = None,
    runs_dir: RunsDir = "runs",
    no_progress: NoProgress = False,
) -> None:
    """Deconstruct long CoT traces: segment, drop unsolvable and redundant approaches, optimise error states."""
    from longcot.dlcot.config import DlcotConfig

    flags = {"segmenter": segmenter, "input": input,  # records or a raw trace file: the stage reads both
             "gold": {"path": gold, "traces": gold_traces or input} if gold else None}
    run_dir, result = run_stage("dlcot", DlcotConfig, config, set_, flags, input_path=None, output=output,
                                runs_dir=runs_dir, progress=not no_progress)
    summary = result.summary
    reasons = ", ".join(f"{k} {v}" for k, v in summary.get("skip_reasons", {}).items()) or "none"
    out.print(f"transformed {summary.get('transformed')}, skipped {summary.get('skipped')} ({reasons}); "
              f"median thought-token ratio {summary.get('median_token_ratio')}")
    out.print(f"report: {summary.get('report')}")
    if gold:
        from longcot.dlcot.gold import gold_rows
        from longcot.dlcot.stage import gold_line

        data = json.loads((run_dir.stage_dir("dlcot") / "gold.json").read_text())
        line = "{:<16} {:>11} {:>9} {:>10} {:>7} {:>7} {:>9}"
        out.print(line.format("gold trace", "explor. cut", "over-cut", "under-cut", "kept", "gold", "boundary"))
        for cells in gold_rows(data["traces"]):
            out.print(line.format(*cells), highlight=False)
        out.print(gold_line(data["summary"]), highlight=False)
        if data["missing"]:
            out.print(f"gold traces not simplified: {', '.join(data['missing'])}", highlight=False)

