"""Serving settings: which model, which engine, limits, batching, autoscaling, and the job smoke test."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from longcot.models import DEFAULT_MODEL
from longcot.records import ModelLineage
from longcot.settings import StageResources, StrictModel

# Where the vLLM engine can fetch LoRA adapters from at request time (what ray.serve.llm accepts).
REMOTE_PREFIXES = ("s3://", "gs://", "abfss://", "azure://")


class AutoscalingSettings(StrictModel):
    """Ray Serve autoscaling of the model replicas (passed to the deployment's ``autoscaling_config``)."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas kept running (0 lets an idle endpoint scale to zero).")
    max_replicas: int = Field(1, ge=1, description="Most replicas Serve may start under load.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at start-up (default: min_replicas).")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="In-flight requests per replica Serve aims for before adding replicas."
    )
    upscale_delay_s: float = Field(10.0, ge=0, description="How long load must stay high before scaling up.")
    downscale_delay_s: float = Field(300.0, ge=0, description="How long load must stay low before scaling down.")

    @model_validator(mode="after")
    def _ordered(self) -> "AutoscalingSettings":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self


class BatchingSettings(StrictModel):
    """Dynamic batching (``@serve.batch``): concurrent requests with the same sampling share forward passes."""

    max_batch_size: int = Field(8, ge=1, description="Most requests generated together in one batch (1 disables batching).")
    batch_wait_timeout_s: float = Field(
        0.02, ge=0, description="How long the first request of a batch waits for others to join it (requests "
        "that arrive while a batch runs join the next one anyway)."
    )


class LimitSettings(StrictModel):
    """What one request may ask for. Requests beyond these get a 400 naming the field."""

    max_tokens: int = Field(2048, ge=1, description="Upper bound on a request's max_tokens.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request gives none (capped by max_tokens).")
    max_prompt_tokens: int = Field(4096, ge=1, description="Longest rendered prompt accepted, in tokens.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted (413 beyond it).")
    max_n: int = Field(4, ge=1, description="Most choices (n) one request may ask for.")
    max_prompts: int = Field(16, ge=1, description="Most prompts in one /v1/completions request.")


class VLLMServeSettings(StrictModel):
    """GPU path only: how ray.serve.llm runs vLLM."""

    engine_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"max_model_len": 8192},
        description="vLLM engine arguments (tensor_parallel_size, max_model_len, gpu_memory_utilization, ...).",
    )
    lora_path: str | None = Field(
        None,
        description="Storage folder of LoRA adapters (s3://, gs://, abfss:// or azure://); a request for "
        "model 'SERVED_NAME:ADAPTER' loads <lora_path>/ADAPTER on first use.",
    )
    max_lora_adapters_per_replica: int = Field(16, ge=1, description="LoRA adapters kept loaded per replica.")
    max_lora_rank: int = Field(64, ge=1, description="Largest LoRA rank vLLM reserves room for.")
    reasoning_parser: str | None = Field(
        None,
        description="vLLM reasoning parser that splits chat answers when reasoning is split (deepseek_r1, qwen3, "
        "...; vLLM returns the thought as `reasoning`). null: chosen from the model's thought markers (its student "
        "card's, else `<think>`): deepseek_r1 when the tokenizer holds `<think>` and `</think>` as single tokens, "
        "which vLLM's parsers need; none otherwise (Sky-T1's markers have no vLLM parser), and answers come back "
        "as generated.",
    )

    @model_validator(mode="after")
    def _remote(self) -> "VLLMServeSettings":
        if self.lora_path is not None and not self.lora_path.startswith(REMOTE_PREFIXES):
            raise ValueError(
                f"lora_path must be a storage URI starting with one of {', '.join(REMOTE_PREFIXES)} "
                f"(got {self.lora_path!r}); a local adapter goes in `adapter` instead"
            )
        return self


class SmokeTestSettings(StrictModel):
    """Job mode: start the endpoint, ask it one question through the official ``openai`` client, record, stop."""

    prompt: str | None = Field(
        None, description="The problem the smoke test asks (the user turn adds the student's instruction, as in "
        "training); null: the first problem the job's train stage held out, else 'What is 12 + 30?'.",
    )
    max_tokens: int = Field(48, ge=1, description="max_tokens of the smoke-test request.")
    stream: bool = Field(True, description="Also check a streamed answer.")


class ServeConfig(StrictModel):
    """Serve a model (optionally with a LoRA adapter) behind an OpenAI-compatible API."""

    backend: Literal["hf", "vllm"] = Field(
        "hf", description="hf: Ray Serve + FastAPI on transformers (CPU or GPU); vllm: ray.serve.llm (GPU)."
    )
    model: str = Field(
        DEFAULT_MODEL,
        description="Base or merged model reference. In a job, '@student' means the model the train stage produced.",
    )
    adapter: str | None = Field(
        None, description="PEFT adapter directory to apply. In a job, '@student' means the train stage's adapter."
    )
    served_model_name: str | None = Field(
        None, description="The model id clients ask for (default: 'longcot-student' with an adapter, else the model reference)."
    )
    host: str = Field("127.0.0.1", description="Address the HTTP proxy listens on (0.0.0.0 to expose it).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable holding the API key; clients must send it as a Bearer token.",
    )
    reasoning: Literal["split", "raw"] = Field(
        "split",
        description="split: a chat answer's thought goes to reasoning_content and the rest to content; raw: "
        "content is the text as generated. A request may override it with 'reasoning_format' (hf backend). "
        "Backend vllm splits with vLLM's reasoning parser (vllm.reasoning_parser), into the field `reasoning`.",
    )
    device: str = Field("auto", description="hf backend: cpu, cuda, or auto.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="hf backend: auto (bfloat16 on a GPU and on a CPU with native bf16, AVX512-BF16 or AMX; "
        "float32 on other CPUs), float32, bfloat16 or float16.",
    )
    limits: LimitSettings = Field(default_factory=LimitSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    num_replicas: int = Field(1, ge=1, description="Fixed replica count (ignored when autoscaling is set).")
    autoscaling: AutoscalingSettings | None = Field(None, description="Autoscale replicas with load.")
    max_ongoing_requests: int = Field(
        32, ge=1, description="In-flight requests per replica; more wait in Serve's queue."
    )
    resources: StageResources = Field(
        default_factory=StageResources, description="What each model replica asks Ray for (backend vllm: at least "
        "the GPUs of its engine, tensor_parallel_size x pipeline_parallel_size; fewer num_gpus are raised to that).",
    )
    vllm: VLLMServeSettings = Field(default_factory=VLLMServeSettings)
    app_name: str = Field("longcot", pattern=r"^[A-Za-z0-9._-]+$", description="Ray Serve application name.")
    serve_config_file: str | None = Field(
        None, description="Where to write the Serve config for `serve deploy` (default: the run's serve/ directory)."
    )
    smoke_test: bool = Field(
        False,
        description="Job mode: start, answer one request through the openai client, record it and shut down "
        "instead of serving in the foreground until interrupted.",
    )
    smoke: SmokeTestSettings = Field(default_factory=SmokeTestSettings)

    @model_validator(mode="after")
    def _consistent(self) -> "ServeConfig":
        if self.batching.max_batch_size > self.max_ongoing_requests:
            raise ValueError(
                f"batching.max_batch_size ({self.batching.max_batch_size}) exceeds max_ongoing_requests "
                f"({self.max_ongoing_requests}): a batch could never fill"
            )
        from longcot.serve.backends import BACKENDS  # imports this module, so not at the top

        gpus = BACKENDS[self.backend].replica_gpus(self)
        if self.resources.num_gpus < gpus:
            # The job's placement check reads resources: an engine's GPUs must show there, so a job
            # refuses a CPU-only cluster before its first stage rather than at serve time.
            self.resources = self.resources.model_copy(update={"num_gpus": float(gpus)})
        return self

    def model_id(self) -> str:
        """The model id the endpoint answers to."""
        return self.served_model_name or ("longcot-student" if self.adapter else self.model)

    def replica_options(self) -> dict[str, Any]:
        """Ray Serve deployment options shared by both backends: replicas, autoscaling, queueing, resources."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": self.resources.ray_remote_args(),
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.model_dump(exclude_none=True)
        else:
            options["num_replicas"] = self.num_replicas
        return options


class ServeLineage(ModelLineage, stage="serve"):
    """The serve job's smoke-test answer: what served it, where, and how long it took."""

    adapter: str | None = Field(None, description="The PEFT adapter applied.")
    endpoint: str | None = Field(None, description="Base URL of the endpoint asked.")
    latency_s: float | None = Field(None, description="Seconds from the request to the whole answer.")
    streamed: bool = Field(False, description="A streamed answer was checked as well.")
