"""A ``TrainConfig`` translated into what the libraries take: Ray Train scaling, transformers arguments,
the DeepSpeed JSON, the PEFT LoRA config. Pure functions (no Ray, no GPU), so every option, GPU-only ones
included, is checked on a CPU machine.
"""

from __future__ import annotations

import json
import math
from importlib import resources as package_resources
from pathlib import Path
from typing import Any

from longcot.errors import ConfigError
from longcot.train.config import DEEPSPEED_PRESETS, TrainConfig


def deepspeed_config(name: str) -> dict[str, Any]:
    """A shipped preset (zero2, zero3, zero2_offload, zero3_offload) or a JSON file, as a dict.

    Values of ``"auto"`` are filled in by transformers from the training arguments.
    """
    preset = name in DEEPSPEED_PRESETS  # else a .json file (TrainConfig accepts nothing else)
    path = package_resources.files("longcot.train").joinpath("deepspeed", f"{name}.json") if preset else Path(name)
    source = f"deepspeed preset {name}" if preset else str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"train.deepspeed: cannot read {path}: {exc.strerror}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(config, dict) or "zero_optimization" not in config:
        raise ConfigError(f"{source}: a DeepSpeed config needs a zero_optimization section")
    return config


def offloads(ds_config: dict[str, Any]) -> bool:
    zero = ds_config.get("zero_optimization", {})
    return any(
        (zero.get(key) or {}).get("device", "none") not in ("none", None) for key in ("offload_optimizer", "offload_param")
    )


def check_deepspeed(config: TrainConfig) -> dict[str, Any] | None:
    """The DeepSpeed config of a run (None without DeepSpeed); CPU offload without GPUs is a ``ConfigError``."""
    if not config.deepspeed:
        return None
    ds = deepspeed_config(config.deepspeed)
    if offloads(ds) and not config.use_gpu:
        raise ConfigError(f"train.deepspeed: {config.deepspeed} offloads to CPU, which needs use_gpu: true")
    return ds


def scaling_config(config: TrainConfig):
    from ray.train import ScalingConfig

    from longcot.cluster import demand_of

    res = config.resources  # Ray Train places accelerator_type itself
    per_worker = {k: v for k, v in demand_of(res).items() if not k.startswith("accelerator_type:")}
    return ScalingConfig(
        num_workers=config.num_workers,
        use_gpu=config.use_gpu,
        resources_per_worker=per_worker,
        accelerator_type=res.accelerator_type,
    )


def steps_for(config: TrainConfig, packs: int) -> tuple[int, int]:
    """``(max_steps, steps_per_epoch)`` for ``packs`` training sequences split evenly over the workers."""
    per_worker = packs // config.num_workers
    if per_worker < 1:
        raise ConfigError(
            f"train: {packs} training sequence(s) cannot feed {config.num_workers} workers; "
            "give more data or fewer num_workers"
        )
    micro_steps = math.ceil(per_worker / config.per_device_batch_size)
    per_epoch = max(1, micro_steps // config.gradient_accumulation_steps)
    if config.max_steps:
        return config.max_steps, per_epoch
    return max(1, math.ceil(config.epochs * per_epoch)), per_epoch


def training_arguments(config: TrainConfig, *, output_dir: str, max_steps: int) -> dict[str, Any]:
    """Keyword arguments of ``transformers.TrainingArguments`` for one worker of the run."""
    return {
        "output_dir": output_dir,
        "per_device_train_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": math.ceil(config.warmup_ratio * max_steps),
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "max_steps": max_steps,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.checkpoints.save_steps,
        "save_total_limit": 1,  # local copies only; Ray Train keeps checkpoints.num_to_keep in storage
        "seed": config.seed,
        "bf16": config.bf16(),
        "fp16": config.precision == "fp16",
        "activation_checkpointing": config.checkpointing_activations(),
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "deepspeed": check_deepspeed(config),
        "use_cpu": not config.use_gpu,
        "ddp_backend": config.torch_backend(),
        "ddp_find_unused_parameters": False,
        "include_num_input_tokens_seen": "all",  # batches are padding-free, so every token is real
        "remove_unused_columns": False,
        "report_to": "none",  # TensorBoard is attached explicitly on rank 0 (see worker)
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
