"""The ``train`` stage: fine-tune the student on Ray Train (transformers Trainer inside each worker).

Records in (``problem`` + ``response``/``dlcot_response``), no records out. Ray Data tokenizes the
records with the student's chat template and packs them; the packed Dataset is sharded over the Ray
Train workers; ``TorchTrainer`` runs ``worker.train_loop_per_worker`` with checkpoints in
``storage_path`` and ``FailureConfig(max_failures)`` restarts. Rows that cannot be trained on (no
response, a wrong verdict, a prompt longer than the cutoff, ...) go to the rejected file with a reason.
No ``dataflow.run_row_stage`` declaration: that runner brings every result row to the driver, as Python objects,
to write it. Train's rows are token ids only the workers need (the shipped traces average 3,895 tokens, so the
paper's 17k traces make about 132M ids: some 4.7 GB as Python ints). They stay in Ray's object store; the driver
reads each row's id, length and reject reason.

Outputs in the stage directory: ``adapter/`` (LoRA) or ``model/`` (full), ``merged/`` (with ``merge``),
``tensorboard/``, ``lengths.json`` and ``train_summary.json``; artifacts ``student_base``,
``student_adapter``, ``student_model`` for the stages after it.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from longcot.errors import ConfigError, InputError, LongcotError
from longcot.rundir import write_json
from longcot.stages import StageContext, StageResult
from longcot.train.config import TrainConfig

STAGE = "train"
ENCODE_BATCH = 64  # records per tokenizing task
LOCAL_ENCODE_ROWS = 1000  # up to this many records are tokenized in this process: less than starting a task
PACK_BLOCK = 512  # examples packed together (packs never span blocks)

console = Console(stderr=True, highlight=False, soft_wrap=True)  # soft_wrap: paths stay whole, on one line


class TrainingStopped(LongcotError):
    """The workers failed more often than ``checkpoints.max_failures``; the run can be resumed by name."""


def run(config: TrainConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Train on the records of ``input_path``; artifacts point at the adapter / model directories."""
    if input_path is None:
        raise InputError("the train stage needs records: run it after a stage that emits them, or pass --input")
    out_dir = Path(ctx.output_override) if ctx.output_override else ctx.run_dir.stage_dir(STAGE)
    ctx.run_dir.add_input(input_path)
    return fine_tune(config, input_path, out_dir, ray_config=ctx.ray, rejected_path=ctx.rejected_path(STAGE),
                     default_storage=ctx.run_dir.path.parent / "checkpoints", progress=ctx.progress)


def _headlines(summary: dict[str, Any]) -> list[str]:
    """What the run found, from its summary (``_summary``, which has every key read here)."""
    lines = [f"trained on {summary['examples']} examples, {summary['global_step']} steps, loss "
             f"{_num(summary['first_loss'])} -> {_num(summary['final_loss'])}; "
             f"{summary['truncated_examples']} of {summary['examples']} cut at cutoff_len "
             f"{summary['lengths']['cutoff_len']} ({100 * summary['truncated_share']:.0f}%)"]
    if summary["held_out"]:
        lines.append(f"held out {summary['held_out']} records of {summary['heldout_problems']} problems for eval")
    return lines + [f"warning: {w}" for w in summary["warnings"]]


def _num(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def fine_tune(
    config: TrainConfig,
    records_path: str | Path,
    output_dir: str | Path,
    *,
    ray_config=None,
    rejected_path: str | Path | None = None,
    default_storage: str | Path | None = None,
    progress: bool = True,
) -> StageResult:
    """The whole stage: tokenize, report lengths, pack, train on Ray Train, collect the outputs. Records out are
    the examples trained on; held-out records are neither out nor rejected."""
    from longcot.cluster import connect, require_resources
    from longcot.train.recipe import check_deepspeed, steps_for

    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rejected_path = Path(rejected_path) if rejected_path else out_dir / "rejected.jsonl"
    check_deepspeed(config)  # a bad preset or an offload without GPUs fails before Ray starts
    connect(ray_config)
    require_resources(config.resources, "train worker", count=config.num_workers)  # else Ray Train waits

    if config.precision == "bf16" and not config.use_gpu:
        from longcot.models import cpu_has_bf16

        if not cpu_has_bf16():
            raise ConfigError("train.precision: bf16 on CPU needs native bf16 (AVX512-BF16 or AMX), which this "
                              "CPU lacks; use precision: fp32")
    heldout_path = out_dir / "heldout.jsonl" if config.heldout is not None else None
    data = prepare_data(config, records_path, rejected_path, progress, heldout_path=heldout_path)
    write_json(out_dir / "lengths.json", data.report.as_dict())
    if data.examples == 0:
        raise InputError(f"no record could be trained on (all {data.records_in} rejected; see {rejected_path})",
                         str(records_path))
    max_steps, steps_per_epoch = steps_for(config, data.sequences)
    run_name = config.checkpoints.run_name or f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    storage = str(config.checkpoints.storage_path or default_storage or out_dir / "checkpoints")
    if "://" not in storage:  # a local directory: absolute, as Ray Train's storage_path
        storage = str(Path(storage).expanduser().resolve())
    console.print(f"[bold]train[/] {data.examples} examples in {data.sequences} sequences, {config.num_workers} "
                  f"workers, {max_steps} steps ({steps_per_epoch}/epoch); checkpoints: {storage}/{run_name}")
    checkpoint = _fit(config, data.packs, max_steps, run_name, storage)
    artifacts, worker_summary = collect_outputs(config, checkpoint, out_dir)
    # the card goes into every directory the student was saved to; the artifact names the first
    cards = [data.card.save(artifacts[k]) for k in ("student_adapter", "student_model") if artifacts.get(k)]
    artifacts["student_card"] = str(cards[0])
    if heldout_path is not None:
        artifacts["heldout_records"] = str(heldout_path)

    summary = _summary(worker_summary, data, max_steps, run_name, storage)
    history = worker_summary.get("log_history", [])
    artifacts["train_summary"] = str(write_json(out_dir / "train_summary.json", {**summary, "log_history": history}))
    return StageResult(STAGE, data.records_in, data.examples, data.records_rejected, artifacts=artifacts,
                       summary=summary, headlines=_headlines(summary))


@dataclass
class PreparedData:
    packs: Any  # materialized ray.data.Dataset of examples.PACK_SCHEMA rows, shuffled
    sequences: int
    report: Any  # examples.LengthReport
    records_in: int
    records_rejected: int
    warnings: list[str]
    card: Any  # train.card.StudentCard of the student these examples make, saved beside its weights
    held_out: int = 0  # records set aside for evaluation
    truncated_examples: int = 0  # trained on, cut at cutoff_len

    @property
    def examples(self) -> int:
        return self.records_in - self.records_rejected - self.held_out


def prepare_data(config: TrainConfig, records_path: str | Path, rejected_path: Path, progress: bool = True,
                 heldout_path: Path | None = None) -> PreparedData:
    """Records -> held-out problems set aside (``train.heldout``, written to ``heldout_path``) -> tokenized
    examples (rejects written with their reason) -> length report -> shuffled packs."""
    from longcot.dataflow import read_input
    from longcot.recordfiles import RejectedWriter, write_records
    from longcot.train.card import StudentCard, majority_markers, problem_hash
    from longcot.train.examples import length_report, pack_batch, split_heldout

    heldout: list[dict] = []
    with RejectedWriter(rejected_path) as rejected:
        rows = read_input(records_path, STAGE, rejected)
        n_in = len(rows) + rejected.count
        if config.heldout is not None:
            rows, heldout = split_heldout(rows, config.heldout.problems, config.heldout.seed, config.data)
            write_records(heldout_path, heldout)
        # in id order: the packs and their seeded shuffle then depend on the records and the seed, not on the
        # order an earlier stage's Ray Data blocks happened to finish in
        rows.sort(key=lambda row: row["id"])
        by_id = {row["id"]: row for row in rows}
        encoded = _encode(rows, config, progress)
        lengths, trained, truncated = [], [], 0
        for info in encoded.select_columns(["id", "length", "truncated", "reject_reason"]).iter_rows():
            if info["length"] is not None:
                lengths.append(info["length"])
            if info["reject_reason"]:
                rejected.reject(STAGE, info["reject_reason"], by_id.get(info["id"]))
            else:
                trained.append(by_id[info["id"]])
                truncated += bool(info["truncated"])

    report = length_report(lengths, config.data.cutoff_len, config.data.truncation)
    for line in report.lines():
        console.print(f"[bold]train[/] {line}")
    warnings = []
    if config.data.truncation == "truncate" and report.truncated_share > config.data.warn_truncated_share:
        warnings.append(
            f"cutoff_len {config.data.cutoff_len} cuts {report.truncated_share:.1%} of the examples "
            f"(more than warn_truncated_share {config.data.warn_truncated_share:.0%}); "
            "raise data.cutoff_len or shorten the traces (dlcot)"
        )
        console.print(f"[yellow]warning:[/] {warnings[-1]}")
    packs = (
        encoded.map_batches(
            pack_batch,
            fn_kwargs={"capacity": config.data.cutoff_len, "packing": config.data.packing},
            batch_format="pyarrow",
            batch_size=PACK_BLOCK,
        )
        .random_shuffle(seed=config.seed)
        .materialize()
    )
    packs.context.enable_progress_bars = False  # the workers' per-epoch bars would only add noise
    card = StudentCard(
        base_model=config.model, mode=config.mode, prompt=config.data.prompt(), markers=majority_markers(trained),
        cutoff_len=config.data.cutoff_len, response_field=config.data.response_field,
        trained_problems=sorted({problem_hash(r.get("problem") or "") for r in trained}),
        heldout_problems=len({problem_hash(r.get("problem") or "") for r in heldout}),
    )
    return PreparedData(packs, packs.count(), report, n_in, rejected.count, warnings, card, held_out=len(heldout),
                        truncated_examples=truncated)


def _fit(config: TrainConfig, packs, max_steps: int, run_name: str, storage: str):
    """Run the TorchTrainer; returns the final checkpoint (``final/``, ``tensorboard/``, the summary)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    from longcot.train.recipe import scaling_config
    from longcot.train.worker import train_loop_per_worker

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump(mode="json"), "max_steps": max_steps, "run_name": run_name},
        torch_config=TorchConfig(backend=config.torch_backend()),
        scaling_config=scaling_config(config),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoints.num_to_keep),
            failure_config=FailureConfig(max_failures=config.checkpoints.max_failures),
        ),
        datasets={"train": packs},
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise TrainingStopped(
            f"training run {run_name} failed ({config.checkpoints.max_failures} restart(s) allowed); run it again "
            f"with checkpoints.run_name: {run_name} and the same storage_path to resume from its last checkpoint.\n"
            + "\n".join(str(exc).strip().splitlines()[:12])
        ) from exc
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} finished without a final checkpoint")
    return result.checkpoint


def collect_outputs(config: TrainConfig, checkpoint, out_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """Copy the final checkpoint's adapter/model and TensorBoard logs into ``out_dir``; merge when asked."""
    from longcot.train.worker import FINAL_DIR, SUMMARY_FILE, TENSORBOARD_DIR

    artifacts: dict[str, str] = {"student_base": config.model, "checkpoint": checkpoint.path}
    target = out_dir / ("adapter" if config.mode == "lora" else "model")
    with checkpoint.as_directory() as final_dir:
        final_dir = Path(final_dir)
        _replace_dir(final_dir / FINAL_DIR, target)
        if (final_dir / TENSORBOARD_DIR).exists():
            _replace_dir(final_dir / TENSORBOARD_DIR, out_dir / "tensorboard")
            artifacts["tensorboard"] = str(out_dir / "tensorboard")
        worker_summary = json.loads((final_dir / SUMMARY_FILE).read_text())
    if config.mode == "full":
        artifacts["student_model"] = str(target)
        return artifacts, worker_summary
    artifacts["student_adapter"] = str(target)
    if config.merge:
        from longcot.models import merge_adapter

        merged = out_dir / "merged"
        shutil.rmtree(merged, ignore_errors=True)
        artifacts["student_model"] = str(merge_adapter(config.model, target, merged))
    return artifacts, worker_summary


def _encode(rows: list[dict], config: TrainConfig, progress: bool):
    """Records to a materialized Dataset of ``examples.ENCODED_SCHEMA`` rows (tokenized in parallel tasks when many)."""
    import ray.data

    from longcot import records
    from longcot.dataflow import rows_to_dataset
    from longcot.train.examples import encode_batch

    kwargs = {"model": config.model, "data": config.data.model_dump(mode="json")}
    if len(rows) <= LOCAL_ENCODE_ROWS:  # (one empty block when there are no rows)
        return ray.data.from_arrow([encode_batch(records.to_table(rows[i : i + ENCODE_BATCH]), **kwargs)
                                    for i in range(0, max(len(rows), 1), ENCODE_BATCH)])
    source = rows_to_dataset(rows, chunk_rows=ENCODE_BATCH)
    source.context.enable_progress_bars = progress
    return source.map_batches(
        encode_batch, fn_kwargs=kwargs, batch_format="pyarrow", batch_size=ENCODE_BATCH
    ).materialize()


def _summary(worker: dict, data: PreparedData, max_steps: int, run_name: str, storage: str) -> dict[str, Any]:
    def logged(key: str) -> list[float]:
        return [entry[key] for entry in worker.get("log_history", []) if key in entry]

    def mean(key: str, digits: int) -> float | None:
        return round(statistics.fmean(logged(key)), digits) if logged(key) else None

    losses = logged("loss")
    return {
        "run_name": run_name,
        "storage_path": storage,
        "examples": data.examples,
        "truncated_examples": data.truncated_examples,
        "truncated_share": round(data.truncated_examples / data.examples, 4) if data.examples else 0.0,
        "held_out": data.held_out,
        "heldout_problems": data.card.heldout_problems,
        "sequences": data.sequences,
        "max_steps": max_steps,
        "global_step": worker.get("global_step"),
        "resumed_from_step": worker.get("resumed_from_step"),
        "already_finished": bool(worker.get("already_finished")),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_loss": worker.get("train_loss"),
        "tokens_per_second": mean("tokens_per_second", 2),
        "step_time": mean("step_time", 4),
        "num_input_tokens_seen": worker.get("num_input_tokens_seen"),
        "train_seconds": worker.get("attempt_train_seconds"),  # the Trainer's loop in the last attempt
        "engine": worker.get("engine"),
        "device": worker.get("device"),
        "lengths": data.report.as_dict(),
        "warnings": data.warnings,
    }


def _replace_dir(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
