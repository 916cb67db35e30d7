"""``longcot sweep JOB.yaml``: the structure-vs-content ablation (a job with a ``sweep:`` block)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import NoProgress, SetPairs, job_with_overrides, out
from longcot.errors import ConfigError


@app.command("sweep")
def sweep_command(
    job_file: Path = typer.Argument(..., help="Job YAML with a sweep: block, e.g. jobs/structure-vs-content.yaml."),
    input: Optional[str] = typer.Option(None, "--input", help="Verified records to build the variants from."),
    set_: SetPairs = None,
    runs_dir: Optional[str] = typer.Option(None, help="Override the job's runs_dir."),
    no_progress: NoProgress = False,
) -> None:
    """Train and evaluate a student per dataset variant and write the table (markdown + PNG).

    Variants that finished in an earlier run are skipped; a failed variant is reported (exit status 1)
    after every other variant has run.
    """
    from longcot.pipeline import run_job

    job = job_with_overrides(job_file, set_, runs_dir)
    if job.sweep is None:
        raise ConfigError(f"{job_file}: no sweep: block (see jobs/structure-vs-content.yaml)")
    run_dir = run_job(job, input_path=input, progress=not no_progress)
    entry = run_dir.manifest["stages"]["sweep"]
    summary = entry["summary"]
    out.print(f"table: {entry['artifacts']['sweep_table']}")
    out.print(f"chart: {entry['artifacts']['sweep_chart']}")
    out.print(f"{summary['finished']} finished, {summary['cached']} finished earlier, {summary['failed']} failed; "
              f"run directory {run_dir.path}")
    if summary["failed"]:
        for name, error in summary["failures"].items():
            out.print(f"[red]failed[/] {name}: {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
