"""What the subcommands share: options declared alike, a stage config from ``--config`` plus ``--set
key=value`` overrides, and running one stage alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console

from longcot.errors import ConfigError, validated
from longcot.yamlfile import read_yaml

out = Console()

# the options of every stage command
ConfigFile = Annotated[Optional[Path], typer.Option(
    help="Job YAML (the block named after this stage is read) or a bare block; the options given override it.")]
SetPairs = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a setting: key=value, dots for nested keys and a number for a list entry "
    "(e.g. sampling.n=4, sources.0.limit=2); repeat for several.")]
RunsDir = Annotated[str, typer.Option(help="Where the run directory (manifest, reports) is created.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")]
# the sampling options of generate and eval (generate.sampling)
Samples = Annotated[Optional[int], typer.Option("--n", help="Samples per problem.")]
MaxTokens = Annotated[Optional[int], typer.Option("--max-tokens", help="Maximum new tokens per sample.")]
Temperature = Annotated[Optional[float], typer.Option(help="Sampling temperature (0: greedy).")]
Seed = Annotated[Optional[int], typer.Option(help="Base sampling seed.")]


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["sampling.n=2", "backend=hf"]`` -> nested dict; values are parsed as YAML scalars."""
    data: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return data


def field_mapping(items: list[str] | None) -> dict[str, str]:
    """``--field FIELD=COLUMN`` pairs as a mapping. Column names stay text, as written: unlike ``--set``
    values they are not read as YAML (a column named ``yes`` or ``1`` is no boolean or number)."""
    mapping = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--field {item!r}: expected FIELD=COLUMN")
        mapping[key.strip()] = value.strip()
    return mapping


def given(options: dict[str, Any]) -> dict[str, Any]:
    """The options a command line gave: ``options`` without None values, nested blocks included, and without
    the blocks that leaves empty; so an option left out never clears a ``--set`` or YAML value."""
    nested = {key: given(value) if isinstance(value, dict) else value for key, value in options.items()}
    return {key: value for key, value in nested.items() if value is not None and value != {}}


def _merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, recursively; a key that is a number indexes a list (``sources.0.limit=2``)."""
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = _merge(current, value)
        elif isinstance(value, dict) and isinstance(current, list) and all(k.isdigit() for k in value):
            items = list(current)
            for index, item in value.items():
                i = int(index)
                if i >= len(items):
                    raise ConfigError(f"--set {key}.{index}: {key} has {len(items)} entries")
                items[i] = _merge(items[i], item) if isinstance(item, dict) and isinstance(items[i], dict) else item
            merged[key] = items
        else:
            merged[key] = value
    return merged


def job_with_overrides(job_file: Path, pairs: list[str] | None, runs_dir: str | None = None):
    """The job YAML at ``job_file``, with ``--set key=value`` overrides (nested keys, list entries) applied
    and the result validated again; ``runs_dir`` (``--runs-dir``) replaces the job's when given."""
    from longcot.config import load_job, parse_job

    job = load_job(job_file)
    if pairs:
        job = parse_job(_merge(job.model_dump(mode="json", exclude_unset=True), parse_overrides(pairs)),
                        f"{job_file} (with --set)")
    if runs_dir:
        job.runs_dir = runs_dir
    return job


def stage_config(cls, stage: str, config_path: Path | None, overrides: dict[str, Any]):
    """Build a stage config: the ``STAGE:`` block of a job YAML (or a bare block), then the overrides."""
    data: dict[str, Any] = {}
    source = f"--config {config_path}" if config_path else "options"
    if config_path:
        loaded = read_yaml(config_path, what="stage config") or {}
        data = loaded.get(stage, loaded) if isinstance(loaded, dict) else {}
    return validated(cls, _merge(data, {k: v for k, v in overrides.items() if v is not None}), f"{source}: {stage}")


def overrides(pairs: list[str] | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The ``--set`` pairs, with the options a command line gave (``given(flags)``) over them: one given wins."""
    return _merge(parse_overrides(pairs), given(flags))


def run_stage(stage: str, cls, config_path: Path | None, pairs: list[str] | None, flags: dict[str, Any], *,
              input_path: str | None, output: str | None, runs_dir: str = "runs", progress: bool = True,
              artifacts: bool = False):
    """Run ``stage`` alone in a new run directory with the config ``stage_config`` builds from ``--config``,
    ``--set`` ``pairs`` and the options given (``overrides``), and print its counts (and its artifacts).

    Returns ``(run_dir, result)`` for the command to print what else the stage reports."""
    from longcot.pipeline import run_single_stage

    cfg = stage_config(cls, stage, config_path, overrides(pairs, flags))
    run_dir, result = run_single_stage(stage, cfg, input_path=input_path, output=output, runs_dir=runs_dir,
                                       progress=progress)
    print_result(run_dir, result)
    for name, path in sorted(result.artifacts.items()) if artifacts else []:
        out.print(f"  {name}: {path}", highlight=False, soft_wrap=True)
    return run_dir, result


def print_result(run_dir, result) -> None:
    out.print(
        f"[bold]{result.stage}[/]: {result.records_in} in, {result.records_out} out, "
        f"{result.records_rejected} rejected -> {result.output or '-'}"
    )
    out.print(f"run directory: {run_dir.path}")
