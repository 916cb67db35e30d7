"""``longcot train``: fine-tune the student (LoRA or full, optionally DeepSpeed) on Ray Train."""

from __future__ import annotations

from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import ConfigFile, RunsDir, SetPairs, out, run_stage


@app.command("train")
def train_command(
    input: str = typer.Option(..., "--input", "-i", help="Records to train on (.jsonl, .parquet or a directory)."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", help="Output directory for adapter/model, TensorBoard logs (default: the run directory)."
    ),
    model: Optional[str] = typer.Option(None, help="Student: embedded:NAME, a hub id, or a local path."),
    mode: Optional[str] = typer.Option(None, help="lora | full"),
    num_workers: Optional[int] = typer.Option(None, help="Ray Train workers."),
    use_gpu: Optional[bool] = typer.Option(None, "--use-gpu/--no-gpu", help="One GPU per worker."),
    deepspeed: Optional[str] = typer.Option(None, help="zero2 | zero3 | zero2_offload | zero3_offload | PATH.json"),
    max_steps: Optional[int] = typer.Option(None, help="Optimizer steps in all (overrides epochs)."),
    epochs: Optional[float] = typer.Option(None, help="Passes over the data."),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate."),
    cutoff_len: Optional[int] = typer.Option(None, help="Longest training sequence in tokens."),
    run_name: Optional[str] = typer.Option(None, help="Ray Train run name; the same name resumes that run."),
    storage_path: Optional[str] = typer.Option(None, help="Checkpoint storage: a local dir or s3://, gs:// URI."),
    merge: Optional[bool] = typer.Option(None, "--merge/--no-merge", help="Also save the merged model."),
    config: ConfigFile = None,
    set_: SetPairs = None,
    runs_dir: RunsDir = "runs",
) -> None:
    """Fine-tune a student on records; prints the artifacts (adapter, merged model, TensorBoard logs)."""
    from longcot.train.config import TrainConfig

    flags = {
        "model": model, "mode": mode, "num_workers": num_workers, "use_gpu": use_gpu, "deepspeed": deepspeed,
        "max_steps": max_steps, "epochs": epochs, "learning_rate": learning_rate, "merge": merge,
        "data": {"cutoff_len": cutoff_len}, "checkpoints": {"run_name": run_name, "storage_path": storage_path},
    }
    _, result = run_stage("train", TrainConfig, config, set_, flags, input_path=input, output=output,
                          runs_dir=runs_dir, artifacts=True)
    summary = result.summary
    if summary.get("already_finished"):
        out.print(f"run {summary['run_name']} had already finished: its final checkpoint was reused", soft_wrap=True)
    if summary.get("final_loss") is not None:
        out.print(
            f"steps {summary['global_step']}, loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}, "
            f"{summary['tokens_per_second']} tokens/s, {summary['step_time']} s/step",
            highlight=False,
            soft_wrap=True,
        )
