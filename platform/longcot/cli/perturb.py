"""``longcot perturb``: corrupt the content or the structure of traces (Li et al. 2025)."""

from __future__ import annotations

from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import ConfigFile, NoProgress, RunsDir, SetPairs, run_stage


@app.command("perturb")
def perturb_command(
    input: str = typer.Option(..., "--input", "-i", help="Records to perturb (.jsonl, .parquet or a directory)."),
    output: str = typer.Option(..., "--output", "-o", help="Perturbed records (.jsonl, .parquet, or a directory)."),
    kind: Optional[str] = typer.Option(
        None, help="wrong_answer | corrupt_digits | remove_keywords | delete_steps | insert_steps | shuffle_steps"
    ),
    ratio: Optional[float] = typer.Option(None, help="Share of numbers, keywords or steps affected (0..1)."),
    seed: Optional[int] = typer.Option(None, help="Seed; the same (seed, record id) gives the same output."),
    config: ConfigFile = None,
    set_: SetPairs = None,
    runs_dir: RunsDir = "runs",
    no_progress: NoProgress = False,
) -> None:
    """Perturb traces: perturbed text in `response`, the untouched text in `original_response`, same id."""
    from longcot.perturb.config import PerturbConfig

    _, result = run_stage("perturb", PerturbConfig, config, set_, {"kind": kind, "ratio": ratio, "seed": seed},
                          input_path=input, output=output, runs_dir=runs_dir, progress=not no_progress)
    summary = result.summary
    if summary.get("candidates") is not None:
        print(f"{summary['kind']}: {summary['affected']} of {summary['candidates']} affected "
              f"(achieved ratio {summary['achieved_ratio']}, asked {summary['ratio']})")
