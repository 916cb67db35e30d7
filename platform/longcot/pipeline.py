"""Run a job: its configured stages in pipeline order, each reading the previous stage's records."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from rich.console import Console

from longcot.cluster import JobPlacement
from longcot.config import JobConfig
from longcot.errors import ConfigError, InputError
from longcot.report.collect import headlines
from longcot.rundir import RunDir
from longcot.stages import StageContext, StageResult

console = Console(stderr=True)


def run_job(job: JobConfig, run_dir: RunDir | None = None, *, input_path: str | None = None,
            progress: bool = True) -> RunDir:
    """Run every configured stage of ``job``; returns the run directory (with its manifest).

    ``input_path`` feeds the first stage when the job has no ``problems`` stage.
    """
    placement = JobPlacement.check(job)  # a stage the cluster can never place fails the job now, not hours in
    run_dir = run_dir or RunDir.create(job.runs_dir, job.name, job.config_hash())
    run_dir.set_config(job)
    if placement.snapshot:
        run_dir.manifest["cluster"] = placement.snapshot
    ctx = StageContext(run_dir=run_dir, record_format=job.record_format, progress=progress, ray=job.ray)
    if input_path:
        run_dir.add_input(input_path)
    current = input_path
    started = time.perf_counter()
    for stage in job.stages():
        console.print(f"[bold cyan]stage {stage}[/] -> {run_dir.path / stage}")
        with placement.hint(stage):
            result = run_timed(stage, getattr(job, stage), current, ctx)
        run_dir.record_stage(stage, result.manifest_entry())
        ctx.artifacts.update(result.artifacts)
        current = result.output or current  # a stage that emits no records passes its input on
        console.print(f"  {stage}: {result.records_in} in, {result.records_out} out, "
                      f"{result.records_rejected} rejected ({result.seconds:.1f}s)")
        for line in result.headlines:
            console.print(f"  {stage}: {line}", highlight=False, soft_wrap=True)
    run_dir.manifest.update(artifacts=ctx.artifacts, seconds=round(time.perf_counter() - started, 2), status="finished")
    run_dir.save()
    write_report(run_dir)
    outcome = [f"{stage}: {line}" for stage, line in headlines(run_dir.manifest)]
    if outcome:
        console.print("[bold]what the run found[/]\n  " + "\n  ".join(outcome), highlight=False, soft_wrap=True)
    return run_dir


def write_report(run_dir: RunDir) -> None:
    """Every run leaves report.html and inspector.html; a report failure is reported, not fatal."""
    from longcot.report.render import build_report

    try:
        report, _ = build_report(run_dir.path)
    except Exception as exc:  # the run's data is complete; only its rendering failed
        console.print(f"[yellow]warning:[/] report not built: {type(exc).__name__}: {exc}")
        return
    console.print(f"report: {report}")


def check_output(input_path: str | Path | None, output: str | Path | None) -> None:
    """``ConfigError`` before anything is written when the output would overwrite the input or live inside it
    (a directory of Parquet parts), or hold the input inside it: a user's input is never touched."""
    if not input_path or not output:
        return
    source, target = Path(input_path).resolve(), Path(output).resolve()
    if source == target:
        raise ConfigError(f"--output {output} is the input file: choose another output "
                          "(the input is never overwritten)")
    if source in target.parents:
        raise ConfigError(f"--output {output} lies inside the input {input_path}: choose an output outside it")
    if target in source.parents:
        raise ConfigError(f"--output {output} would hold the input {input_path}: choose another output")


def run_single_stage(stage: str, config, *, input_path: str | None, output: str | None, runs_dir: str = "runs",
                     progress: bool = True) -> tuple[RunDir, StageResult]:
    """Run one stage alone (the CLI subcommands): its own run directory, optional explicit output path."""
    job = JobConfig.model_validate({"name": stage, "runs_dir": runs_dir, stage: config.model_dump(mode="json")})
    check_output(input_path or getattr(config, "input", None), output)
    run_dir = RunDir.create(runs_dir, stage, job.config_hash())
    run_dir.set_config(job)
    if input_path:
        if not Path(input_path).exists():
            raise InputError("no such file or directory (--input)", input_path)
        run_dir.add_input(input_path)
    ctx = StageContext(run_dir=run_dir, output_override=output, progress=progress, ray=job.ray)
    result = run_timed(stage, config, input_path, ctx)
    run_dir.manifest["status"] = "finished"
    run_dir.record_stage(stage, result.manifest_entry())  # saves the manifest
    return run_dir, result


def run_timed(stage: str, config, input_path: str | None, ctx: StageContext) -> StageResult:
    """Run ``longcot.<stage>.stage.run``, imported only now (so a CPU machine never imports GPU-only code); its
    result carries how long it took and when it started (wall clock)."""
    t0, wall = time.perf_counter(), time.time()
    result: StageResult = importlib.import_module(f"longcot.{stage}.stage").run(config, input_path, ctx)
    result.seconds, result.started_at = time.perf_counter() - t0, wall
    return result
