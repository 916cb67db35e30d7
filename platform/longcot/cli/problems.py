"""``longcot problems``: read problems from a file, a dataset, a benchmark or reasoning-gym."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import field_mapping, run_stage


@app.command("problems")
def problems_command(
    output: str = typer.Option(..., "--output", "-o", help="Output records (.jsonl, .parquet, or a directory)."),
    input: Optional[str] = typer.Option(None, "--input", "-i", help="A local JSONL/Parquet file of problems."),
    benchmark: Optional[str] = typer.Option(None, help="A registry benchmark, e.g. gsm8k."),
    hf: Optional[str] = typer.Option(None, help="A Hugging Face dataset name or save_to_disk directory."),
    gym: Optional[str] = typer.Option(None, help="A reasoning-gym task name."),
    field: Optional[list[str]] = typer.Option(None, "--field", help="Field mapping, e.g. problem=question."),
    domain: str = typer.Option("math", help="math | code | mcq | gym"),
    limit: Optional[int] = typer.Option(None, help="At most this many problems."),
    config: Optional[Path] = typer.Option(None, help="YAML with a problems: block instead of the options."),
) -> None:
    """Read problems into longcot records."""
    from longcot.problems.config import ProblemsConfig

    overrides = {}
    chosen = [s for s in (input, benchmark, hf, gym) if s]
    if not config:
        if len(chosen) != 1:
            raise typer.BadParameter("give exactly one of --input, --benchmark, --hf, --gym (or --config)")
        fields = field_mapping(field)
        if input:
            source = {"kind": "file", "path": input, "domain": domain, "fields": fields}
        elif benchmark:
            source = {"kind": "benchmark", "name": benchmark}
        elif hf:
            source = {"kind": "hf", "name": hf, "domain": domain, "fields": fields}
        else:
            source = {"kind": "reasoning_gym", "task": gym, "size": limit or 16}
        if limit:
            source["limit"] = limit
        overrides = {"sources": [source]}
    run_stage("problems", ProblemsConfig, config, None, overrides, input_path=None, output=output)
