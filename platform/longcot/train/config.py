"""Fine-tuning settings: what to train on, how (LoRA or full, DeepSpeed), on what, and where checkpoints go.

GPU-only settings (bf16/fp16, the NCCL backend, DeepSpeed CPU offload) are rejected here unless
``use_gpu`` is on; with ``use_gpu`` on, the stage checks the cluster has the GPUs before it starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from longcot.models import DEFAULT_MODEL
from longcot.settings import StageResources, StrictModel

# Shipped DeepSpeed configs (``longcot/train/deepspeed/<name>.json``); any other value is a path to a JSON file.
DEEPSPEED_PRESETS = ("zero2", "zero3", "zero2_offload", "zero3_offload")


class LoraSettings(StrictModel):
    """PEFT LoRA adapters (used when ``mode`` is ``lora``)."""

    rank: int = Field(16, ge=1, description="Adapter rank r (the paper's LoRA recipe used 64).")
    alpha: float = Field(32.0, gt=0, description="Scaling alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt (e.g. [q_proj, v_proj]), or all-linear."
    )


class DataSettings(StrictModel):
    """How records become training sequences."""

    response_field: Literal["auto", "response", "dlcot_response"] = Field(
        "auto", description="Assistant text: auto uses dlcot_response where DLCoT set it, else response."
    )
    only_correct: bool = Field(
        True, description="Reject records whose verdict is known and not correct (unverified ones are kept)."
    )
    system_prompt: str | None = Field(
        None, description="System turn of every example; null keeps the chat template's default."
    )
    instruction: str | None = Field(
        None, description="Text after the problem in the user turn; null: the row's or its domain's default; '' for none."
    )
    cutoff_len: int = Field(4096, ge=16, description="Longest training sequence in tokens (prompt + response).")
    truncation: Literal["truncate", "drop"] = Field(
        "truncate", description="An example longer than cutoff_len is cut to it, or rejected."
    )
    warn_truncated_share: float = Field(
        0.1, ge=0, le=1, description="Warn when more than this share of examples exceeds cutoff_len."
    )
    packing: bool = Field(
        True, description="Pack several examples into one sequence of up to cutoff_len tokens (attention stays per example)."
    )

    def prompt(self):
        """The student's prompt these settings make (``generate.prompting.StudentPrompt``)."""
        from longcot.generate.prompting import StudentPrompt

        return StudentPrompt(system_prompt=self.system_prompt, instruction=self.instruction)


class HeldoutSettings(StrictModel):
    """Problems set aside before training: the student never sees them, and the eval stage measures on them
    (held-out NLL of their teacher traces, and the student's own answers to them)."""

    problems: int = Field(16, ge=1, description="How many problems to hold out (every record of each), chosen among "
                          "those with a trainable record.")
    seed: int = Field(0, description="Which problems: the first ones in the order of a hash of this seed and the "
                      "problem text, so the choice does not depend on the input's order.")


class CheckpointSettings(StrictModel):
    """Where checkpoints go and how a run survives failures."""

    storage_path: str | None = Field(
        None, description="Local dir or cloud URI (s3://, gs://) for checkpoints; default: <runs_dir>/checkpoints."
    )
    run_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Ray Train run name. Reusing a name with the same storage_path resumes that run.",
    )
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many optimizer steps.")
    num_to_keep: int = Field(2, ge=1, description="Checkpoints kept in storage (oldest deleted first).")
    max_failures: int = Field(
        1, ge=-1, description="Worker failures to recover from, each resuming from the last checkpoint (-1: no limit)."
    )


class TrainConfig(StrictModel):
    """Fine-tune the student on the curated traces."""

    model: str = Field(DEFAULT_MODEL, description="Student: embedded:NAME, a hub id, or a local path.")
    mode: Literal["lora", "full"] = Field("lora", description="LoRA adapters or full fine-tuning.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    heldout: HeldoutSettings | None = Field(
        None, description="Hold problems out of training for evaluation (their records go to the stage's "
        "heldout.jsonl, the `@heldout` of eval.heldout.records); null trains on every record.",
    )

    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (paper: 1e-5 full, 1e-4 LoRA).")
    epochs: float = Field(3.0, gt=0, description="Passes over the data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps in all; overrides epochs.")
    per_device_batch_size: int = Field(1, ge=1, description="Sequences (packs) per worker per micro-step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-steps per optimizer step.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule."
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    logging_steps: int = Field(10, ge=1, description="Log loss, lr, tokens/s and step time every this many steps.")
    seed: int = Field(42, description="Seed for data order and initialisation.")

    num_workers: int = Field(2, ge=1, description="Ray Train workers (data-parallel ranks).")
    use_gpu: bool = Field(False, description="Train on GPUs: resources.num_gpus per worker, 1 when that is 0.")
    resources: StageResources = Field(
        default_factory=StageResources, description="Per-worker resources: num_cpus, num_gpus, custom, accelerator_type."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPU, fp32 on CPU. bf16 on CPU needs native bf16 (AVX512-BF16 or AMX, "
        "checked when training starts) and trains in bf16 autocast; fp16 needs use_gpu."
    )
    gradient_checkpointing: bool | None = Field(
        None, description="Recompute activations in backward to save memory; null: on with GPUs, off on CPU."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; null: the model's default (sdpa). flash_attention_2 needs GPUs."
    )
    deepspeed: str | None = Field(
        None, description="DeepSpeed: zero2, zero3, zero2_offload, zero3_offload (offload needs GPUs), or a JSON path."
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend: auto is nccl on GPU, gloo on CPU."
    )

    checkpoints: CheckpointSettings = Field(default_factory=CheckpointSettings)
    merge: bool = Field(False, description="Also save base + adapter merged into a standard HF model directory.")

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_choice(cls, value: str | None) -> str | None:
        if value is not None and value not in DEEPSPEED_PRESETS and not value.endswith(".json"):
            raise ValueError(f"expected one of {', '.join(DEEPSPEED_PRESETS)} or a path to a .json file, got {value!r}")
        return value

    @model_validator(mode="after")
    def _gpu_only_options(self) -> "TrainConfig":
        if self.use_gpu:
            if not self.resources.num_gpus:  # the one place that says use_gpu means one GPU per worker
                self.resources = self.resources.model_copy(update={"num_gpus": 1.0})
            return self
        if self.precision == "fp16":
            raise ValueError("precision fp16 needs GPUs: set use_gpu: true, or precision: bf16 or fp32")
        if self.backend == "nccl":
            raise ValueError("backend nccl needs GPUs: set use_gpu: true or backend: gloo")
        if self.deepspeed and self.deepspeed.endswith("_offload"):
            raise ValueError(f"deepspeed {self.deepspeed} (CPU offload of a GPU run) needs use_gpu: true")
        if self.attn_implementation == "flash_attention_2":
            raise ValueError("attn_implementation flash_attention_2 needs use_gpu: true")
        if self.resources.num_gpus:
            raise ValueError("resources.num_gpus is set but use_gpu is false")
        return self

    def bf16(self) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and self.use_gpu)

    def checkpointing_activations(self) -> bool:
        return self.use_gpu if self.gradient_checkpointing is None else self.gradient_checkpointing

    def torch_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.use_gpu else "gloo"
