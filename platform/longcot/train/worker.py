"""What every Ray Train worker runs: the transformers Trainer on this worker's shard of the packed data.

Checkpoints: transformers saves into a per-node output directory; after every rank has written its part
(DeepSpeed writes one shard per rank), local rank 0 of each node hands the folder to Ray Train, which
stores it under ``storage_path`` and keeps ``num_to_keep``. A restarted worker group (a failure, or a
re-run with the same run name) gets the latest one from ``ray.train.get_checkpoint()`` and the Trainer
resumes from it: weights, optimizer, scheduler, RNG and the step count.

The last report carries ``final/`` (the adapter, or the full model), ``tensorboard/`` and the summary.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ray.data.collate_fn import ArrowBatchCollateFn
from ray.train.huggingface.transformers import RayTrainReportCallback
from transformers import Trainer, TrainerCallback

from longcot.train.examples import collate_packs

FINAL_DIR = "final"
TENSORBOARD_DIR = "tensorboard"
SUMMARY_FILE = "summary.json"
HF_CHECKPOINT_DIR = RayTrainReportCallback.CHECKPOINT_NAME


def merged_logs(state) -> dict[str, Any]:
    """The latest value of every metric transformers logged (what Ray's report callback sends)."""
    return {key: value for entry in state.log_history for key, value in entry.items()}


class PackCollator(ArrowBatchCollateFn):
    """Ray Data batches of packs (Arrow) to the flattened tensors the model takes."""

    def __call__(self, batch):
        return collate_packs(batch.column("input_ids").to_pylist(), batch.column("labels").to_pylist())


class StepMetricsCallback(TrainerCallback):
    """Adds to each training log: ``tokens_per_second`` (all ranks together), ``step_time`` (seconds per
    optimizer step) and ``resumed_from_step`` (where this attempt started: 0, or the checkpoint it resumed).
    """

    start_step = 0
    _mark: tuple[float, int, int]  # time, step and tokens seen at the last log (set at the start of training)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step  # already restored from the checkpoint when resuming
        self._mark = (time.perf_counter(), state.global_step, state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        now = time.perf_counter()
        then, step, tokens = self._mark
        values: dict[str, float] = {"resumed_from_step": self.start_step}
        if state.global_step > step and now > then:
            values["step_time"] = round((now - then) / (state.global_step - step), 4)
            values["tokens_per_second"] = round((state.num_input_tokens_seen - tokens) / (now - then), 2)
        logs.update(values)  # later callbacks (TensorBoard) see them
        if state.log_history:
            state.log_history[-1].update(values)  # and so does what is reported to Ray Train
        self._mark = (now, state.global_step, state.num_input_tokens_seen)


class NodeCheckpointReport(RayTrainReportCallback):
    """Ray's report callback, safe when ranks share a node's output directory.

    Every rank first waits until all ranks have written their part of the checkpoint; then one rank per
    node uploads the folder (holding that node's DeepSpeed shards), the others report metrics only.
    """

    def on_save(self, args, state, control, **kwargs):
        import ray.train

        _barrier()
        if ray.train.get_context().get_local_rank() == 0:
            return super().on_save(args, state, control, **kwargs)
        ray.train.report(metrics=merged_logs(state), checkpoint=None)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def build_model(config, training_args):
    """The student for training: full weights, or the base with fresh LoRA adapters.

    The seed is set first: LoRA initialises its A matrices at random here, before the Trainer seeds
    anything, and the same job must train the same student."""
    import torch
    from transformers import set_seed

    from longcot.models import pretrained_lm, resolve
    from longcot.train.recipe import lora_config

    # LoRA: a bf16 base is enough (adapters stay fp32); full FT keeps fp32 master weights.
    dtype = torch.bfloat16 if config.mode == "lora" and training_args.bf16 else torch.float32
    set_seed(config.seed)
    # attn_implementation None: the model's default, as when it is not passed
    model = pretrained_lm(resolve(config.model), dtype=dtype, attn_implementation=config.attn_implementation)
    model.config.use_cache = False
    if config.mode == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(config))
        # PEFT names the base by where it was loaded from (an embedded model's cache directory on this machine);
        # the saved adapter names it as the job did (``embedded:NAME``, a hub id), so it means the same anywhere
        model.peft_config["default"].base_model_name_or_path = config.model
    return model


def train_loop_per_worker(plan: dict[str, Any]) -> None:
    """Ray Train entry point. ``plan``: the TrainConfig (JSON), ``max_steps`` and the ``run_name``."""
    import ray.train
    from ray.train.huggingface.transformers import prepare_trainer
    from transformers import TrainingArguments

    from longcot.models import load_tokenizer
    from longcot.train.config import TrainConfig
    from longcot.train.recipe import training_arguments

    config = TrainConfig.model_validate(plan["config"])
    context = ray.train.get_context()
    rank, local_rank = context.get_world_rank(), context.get_local_rank()
    scratch = Path(tempfile.gettempdir()) / "longcot-train" / plan["run_name"]  # the same on every node and attempt
    output_dir = scratch / "hf"

    with contextlib.ExitStack() as stack:
        restored = ray.train.get_checkpoint()
        restored_dir = Path(stack.enter_context(restored.as_directory())) if restored else None
        if restored_dir is not None and (restored_dir / FINAL_DIR).exists():  # finished: report its end again
            summary = {**json.loads((restored_dir / SUMMARY_FILE).read_text()), "already_finished": True}
            _report_final(rank, {".": restored_dir}, summary)
            return
        if local_rank == 0:  # leftovers of an earlier attempt must not pass for this attempt's checkpoints
            shutil.rmtree(output_dir, ignore_errors=True)
            output_dir.mkdir(parents=True, exist_ok=True)
        _barrier()

        args = TrainingArguments(**training_arguments(config, output_dir=str(output_dir), max_steps=plan["max_steps"]))
        tokenizer = load_tokenizer(config.model, padding_side="right")
        model = build_model(config, args)
        shard = ray.train.get_dataset_shard("train")
        batches = shard.iter_torch_batches(batch_size=config.per_device_batch_size, collate_fn=PackCollator())

        step_metrics = StepMetricsCallback()
        callbacks: list[TrainerCallback] = [step_metrics]
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback

            callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(scratch / TENSORBOARD_DIR))))
        callbacks.append(NodeCheckpointReport())
        trainer = Trainer(model=model, args=args, train_dataset=batches, processing_class=tokenizer, callbacks=callbacks)
        trainer = prepare_trainer(trainer)

        started = time.perf_counter()
        resume = str(restored_dir / HF_CHECKPOINT_DIR) if restored_dir is not None else None
        trainer.train(resume_from_checkpoint=resume)
        train_seconds = time.perf_counter() - started

    final = scratch / FINAL_DIR
    trainer.save_model(str(final))  # collective under ZeRO-3 (gathers the weights); rank 0 writes
    _barrier()
    state = trainer.state  # (the TensorBoard callback closed, so flushed, its writer at the end of training)
    summary = {**merged_logs(state), "global_step": state.global_step, "resumed_from_step": step_metrics.start_step,
               "attempt_train_seconds": round(train_seconds, 3), "num_input_tokens_seen": state.num_input_tokens_seen,
               # what really trained: DeepSpeedEngine under deepspeed, DistributedDataParallel over several
               # workers, else the model itself; and the worker's device
               "engine": type(trainer.model_wrapped).__name__, "device": str(args.device),
               "log_history": state.log_history}
    _report_final(rank, {FINAL_DIR: final, TENSORBOARD_DIR: scratch / TENSORBOARD_DIR}, summary)
    _barrier()
    if local_rank == 0:
        shutil.rmtree(scratch, ignore_errors=True)


def _report_final(rank: int, folders: dict[str, Path], summary: dict[str, Any]) -> None:
    """The last report: on rank 0, a checkpoint of ``folders`` (name in it -> folder here, where it exists)
    and ``SUMMARY_FILE``; every rank reports the summary's metrics (all but ``log_history``)."""
    import ray.train
    from ray.train import Checkpoint

    metrics = {k: v for k, v in summary.items() if k != "log_history"}
    if rank != 0:
        ray.train.report(metrics=metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in folders.items():
            if folder.exists():
                shutil.copytree(folder, Path(tmp) / name, dirs_exist_ok=True)
        (Path(tmp) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
        ray.train.report(metrics=metrics, checkpoint=Checkpoint.from_directory(tmp))
