"""``longcot generate``: teacher rollouts for a file of problems, through the hf, vllm, openai, recorded or
llamacpp backend."""

from __future__ import annotations

from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import (ConfigFile, MaxTokens, NoProgress, RunsDir, Samples, Seed, SetPairs, Temperature,
                                 run_stage)


@app.command("generate")
def generate_command(
    input: str = typer.Option(..., "--input", "-i", help="Problem records (.jsonl, .parquet or a directory)."),
    output: str = typer.Option(..., "--output", "-o", help="Sample records (.jsonl or a directory of Parquet parts); "
                               "re-running with the same output resumes it."),
    backend: Optional[str] = typer.Option(None, help="hf | vllm | openai | recorded | llamacpp"),
    model: Optional[str] = typer.Option(None, help="embedded:NAME, a hub id, a local path, or the served model name."),
    n: Samples = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    seed: Seed = None,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Prompts per batch (and per committed chunk)."),
    concurrency: Optional[int] = typer.Option(None, help="Generating replicas (actors)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="openai backend: the endpoint, e.g. http://host:8000/v1."),
    new_output: bool = typer.Option(False, "--new-output", help="If the output was made with other settings, "
                                    "write beside it (named after the new fingerprint) instead of refusing."),
    config: ConfigFile = None,
    set_: SetPairs = None,
    runs_dir: RunsDir = "runs",
    no_progress: NoProgress = False,
) -> None:
    """Generate one trace record per sample for every problem of --input."""
    from longcot.generate.config import GenerateConfig

    flags = {
        "backend": backend, "model": model, "batch_size": batch_size, "concurrency": concurrency,
        "sampling": {"n": n, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed},
        "openai": {"base_url": base_url or None}, "if_changed": "new_output" if new_output else None,
    }
    run_stage("generate", GenerateConfig, config, set_, flags, input_path=input, output=output, runs_dir=runs_dir,
              progress=not no_progress)
