"""``longcot run JOB.yaml`` and ``longcot config-schema``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import NoProgress, SetPairs, job_with_overrides, out


@app.command("run")
def run_command(
    job_file: Path = typer.Argument(..., help="Job YAML (see `longcot config-schema`)."),
    runs_dir: Optional[str] = typer.Option(None, help="Override the job's runs_dir."),
    input: Optional[str] = typer.Option(None, "--input", help="Records for the first stage when the job has no problems stage."),
    no_progress: NoProgress = False,
    set_: SetPairs = None,
) -> None:
    """Run every configured stage of a job and write a run directory with its manifest."""
    from longcot.pipeline import run_job

    job = job_with_overrides(job_file, set_, runs_dir)
    run_dir = run_job(job, input_path=input, progress=not no_progress)
    out.print(f"[green]finished[/] {job.name}: run directory {run_dir.path}")


@app.command("config-schema")
def config_schema_command(
    markdown: bool = typer.Option(False, "--markdown", help="Print the configuration reference as markdown."),
) -> None:
    """Print the JSON schema of a job YAML (or, with --markdown, the configuration reference)."""
    from longcot.config import JobConfig

    if markdown:
        from longcot.configdoc import markdown_reference

        print(markdown_reference())
        return
    print(json.dumps(JobConfig.model_json_schema(), indent=2))
