"""``longcot import``: read a distillation set or an API dump (ShareGPT, OpenAI messages, R1, columns) into records."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import field_mapping, out, validated
from longcot.errors import InputError


@app.command("import")
def import_command(
    input: str = typer.Option(..., "--input", "-i", help="JSONL, Parquet, or a datasets save_to_disk directory."),
    output: str = typer.Option(..., "--output", "-o", help="Records (.jsonl, .parquet, or a directory)."),
    shape: str = typer.Option("auto", help="auto, sharegpt (Bespoke-Stratos, OpenThoughts), messages (OpenAI, with "
                              "reasoning_content or not) or columns (problem/response, R1 <think>, a reasoning column)."),
    field: Optional[list[str]] = typer.Option(None, "--field", help="Column mapping, e.g. problem=question, "
                                              "reasoning=reasoning_content, reference_answer=answer."),
    domain: str = typer.Option("math", help="math | code | mcq | gym"),
) -> None:
    """Import teacher traces made elsewhere: one record per row, unreadable rows to OUTPUT's rejected file.

    The records go to verify, dlcot, train or the recorded teacher backend like any generate output."""
    from longcot.generate.imports import ImportConfig, import_rows
    from longcot.pipeline import check_output
    from longcot.recordfiles import RecordWriter, RejectedWriter

    config = validated(ImportConfig, {"shape": shape, "fields": field_mapping(field), "domain": domain},
                       "import options")
    if not Path(input).exists():
        raise InputError("no such file or directory", input)
    check_output(input, output)
    target = Path(output)
    rejected_path = target.with_name(target.stem + ".rejected.jsonl") if target.suffix else target / "rejected.jsonl"
    with RecordWriter(target, append=False) as writer, RejectedWriter(rejected_path) as rejected:
        writer.write_stream(rejected.readable(import_rows(input, config), "import"))
        n_out, n_rej = writer.count, rejected.count
    n_in = n_out + n_rej  # every row is written or rejected
    if n_in == 0:
        raise InputError("holds no rows (the input is empty)", input)
    if not n_rej:
        rejected_path.unlink(missing_ok=True)
    out.print(f"[bold]import[/]: {n_in} rows, {n_out} records -> {output}"
              + (f", {n_rej} rejected -> {rejected_path}" if n_rej else ""), highlight=False)
