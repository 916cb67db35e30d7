"""Teacher rollout settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from longcot.models import DEFAULT_MODEL
from longcot.records import ModelLineage
from longcot.settings import StageResources, StrictModel


def backend_class(name: str):
    """The ``generate.backends.Backend`` class called ``name``: what a config asks of its backend (does it apply
    adapters, can it run this config) is asked of the class."""
    from longcot.generate.backends import BACKENDS  # that module imports this one

    return BACKENDS[name]


class SamplingConfig(StrictModel):
    """Sampling parameters; all but ``n`` are part of the output's identity (a change is detected)."""

    n: int = Field(1, ge=1, description="Samples per problem. Raising it on a resumed output adds the missing samples.")
    temperature: float = Field(0.0, ge=0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest set of tokens with this much probability.")
    max_tokens: int = Field(512, ge=1, description="Maximum new tokens per sample.")
    seed: int = Field(0, description="Base seed; each sample derives its own from it and its id.")


class HFSettings(StrictModel):
    """The ``hf`` backend: transformers in an actor pool (CPU or GPU)."""

    adapter: str | None = Field(None, description="PEFT adapter directory applied on top of the model.")
    device: str = Field("auto", description="auto (cuda when the actor sees a GPU, else cpu), cpu, cuda or cuda:N.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto (bfloat16 on a GPU and on a CPU with native bf16, AVX512-BF16 or AMX; float32 "
        "on other CPUs), float32, bfloat16 or float16. Part of the output's fingerprint as the dtype it means.",
    )


class LlamaCppSettings(StrictModel):
    """The ``llamacpp`` backend: llama.cpp on a GGUF file, on CPU, in an actor pool (the optional extra
    ``pip install 'longcot[llamacpp]'``, which compiles llama.cpp). The stage's ``model`` still names the Hugging
    Face model whose tokenizer renders prompts and counts tokens; llama.cpp runs ``gguf``."""

    gguf: str | None = Field(
        None, description="GGUF file llama.cpp loads; null: the embedded model's own file (model: embedded:NAME).",
    )
    weights: Literal["as_stored", "bf16", "f16", "q8_0", "q4_0"] = Field(
        "bf16", description="How llama.cpp stores the weights it runs. as_stored: the GGUF file as it is; bf16, "
        "f16, q8_0, q4_0: a copy llama.cpp's own quantizer writes once into longcot's cache. bf16 holds the very "
        "weights the hf backend computes with in bf16, and prefills and decodes batches faster than a 4-bit file "
        "on CPUs with AVX512-BF16 (bench/RESULTS.md); q4_0 decodes faster still, at the cost of 4-bit weights.",
    )
    sequences: int | None = Field(
        None, ge=1, description="Sequences decoded together in one llama.cpp batch (one KV cache, each sequence "
        "attending to its own cells); "
        "a finished one's slot takes the next prompt. null: batch_size.",
    )
    threads: int | None = Field(
        None, ge=1, description="llama.cpp CPU threads per actor; null: the actor's resources.num_cpus. On cores "
        "shared with other work use 1: ggml's threads spin at every operation's barrier while one of them waits "
        "for a core (6x the CPU time on the shared 2-core machine, bench/RESULTS.md).",
    )


class VLLMEngineSettings(StrictModel):
    """The ``vllm`` backend: ``ray.data.llm`` engine replicas on GPUs (``concurrency`` replicas)."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one replica shards the model over.")
    pipeline_parallel_size: int = Field(1, ge=1, description="Pipeline stages per replica (multiplies the GPUs per replica).")
    max_model_len: int | None = Field(None, ge=1, description="Context length the engine reserves KV cache for (prompt + max_tokens).")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="Fraction of GPU memory the engine may use.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other vLLM engine arguments (enable_prefix_caching, max_num_seqs, dtype, ...).",
    )
    max_concurrent_batches: int | None = Field(None, ge=1, description="Batches in flight per replica (ray.data.llm default when unset).")
    runtime_env: dict[str, Any] | None = Field(None, description="Ray runtime_env of the engine actors (e.g. a pinned vllm pip).")


class OpenAISettings(StrictModel):
    """The ``openai`` backend: any OpenAI-compatible chat completions endpoint, through the ``openai`` SDK."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="Endpoint root; requests go to BASE_URL/chat/completions.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (the key itself is never written anywhere). "
        "null for endpoints without auth.",
    )
    served_model: str | None = Field(None, description="Model name sent in requests (default: the stage's model).")
    qps: float = Field(4.0, gt=0, description="Most requests started per second, over all workers together; retries "
                       "count (a provider counts them too). A provider's RPM limit / 60, with some margin.")
    tpm: float | None = Field(
        None, gt=0, description="Most tokens per minute, over all workers together (OpenAI's TPM limit); a request "
        "counts its prompt (characters / 4) plus max_tokens when it starts, as OpenAI counts it. null: no token limit "
        "(DeepSeek limits concurrent requests instead: see max_in_flight).",
    )
    max_in_flight: int = Field(8, ge=1, description="Concurrent requests per worker.")
    max_retries: int = Field(5, ge=0, description="Retries of a request after a 429, a 5xx, a timeout or a dropped "
                             "connection.")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each retry (with jitter), or what the "
                             "server's Retry-After asks.")
    max_backoff_s: float = Field(60.0, ge=0, description="Longest wait between two retries; a Retry-After asking for "
                                 "more ends the request as an error instead.")
    timeout_s: float = Field(600.0, gt=0, description="Per-request timeout in seconds.")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra JSON fields of every request (e.g. "
                                       "top_k); not the ones the backend sets itself (model, messages, sampling).")
    response_cache: str | None = Field(
        None, description="Directory where every answer is written as it arrives, keyed by its request; a resumed "
        "run takes answers from it instead of sending their requests again (a kill loses no paid-for answer, even "
        "one whose batch was not yet written to the output). null: no cache.",
    )

    @model_validator(mode="after")
    def _extra_body_adds_only(self) -> "OpenAISettings":
        # The SDK merges extra_body last, so these would silently win over the stage's own settings (and the
        # output's fingerprint), or ask for answers the backend cannot read (several choices, a stream).
        reserved = {"model", "messages", "max_tokens", "temperature", "top_p", "seed", "n", "stream"}
        taken = sorted(set(self.extra_body) & reserved)
        if taken:
            raise ValueError(f"extra_body: {', '.join(taken)} may not be set here: the backend sets the request's "
                             "model, messages and sampling from served_model and sampling, and reads one whole answer")
        return self


class RecordingFields(StrictModel):
    """Which column of a recording holds what."""

    problem: str = Field("problem", description="Column with the problem statement the response answers.")
    response: str = Field("response", description="Column with the teacher's full response.")
    finish_reason: str | None = Field(
        None, description="Column with each response's finish reason (stop or length); null: read it from the text "
        "(a response that stops inside its thought or before its closing marker hit the limit).",
    )


class RecordedSettings(StrictModel):
    """The ``recorded`` backend: a teacher's responses recorded earlier answer the problems they belong to."""

    path: str | None = Field(
        None, description="JSONL or Parquet recording: one row per response, e.g. jobs/data/traces/"
        "math500_sky-t1-27b.jsonl or a distillation set such as Bespoke-Stratos flattened to problem/response.",
    )
    fields: RecordingFields = Field(default_factory=RecordingFields)
    tokenizer: str = Field(
        DEFAULT_MODEL, description="Model whose tokenizer counts prompt and output tokens (the student's, as "
        "everywhere in longcot); the recording's own model may be nowhere to load.",
    )


class GenerateConfig(StrictModel):
    """Teacher rollouts through one of the backends: hf, vllm, openai, or a recorded teacher."""

    backend: Literal["hf", "vllm", "openai", "recorded", "llamacpp"] = Field(
        "hf", description="Which backend generates: hf (transformers), vllm (GPUs), openai (an HTTP endpoint), "
        "recorded (responses a teacher wrote earlier; sampling settings do not apply to them) or llamacpp (a GGUF "
        "model in llama.cpp on CPU; the optional extra longcot[llamacpp]).",
    )
    model: str = Field(DEFAULT_MODEL, description="embedded:NAME, a hub id, or a local path (openai: the served name).")
    markers: Literal["sky", "think"] = Field("think", description="Thought/solution marker convention asked for.")
    instruction: str | None = Field(
        None, description="Instruction after every problem, replacing the row's own and the domain default ('' for none)."
    )
    system_prompt: str | None = Field(
        None, description="Replace the built-in reasoning system prompt ('' drops the system turn)."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    batch_size: int = Field(8, ge=1, description="Prompts per batch sent to the backend (and per committed output chunk).")
    concurrency: int = Field(1, ge=1, description="Replicas (actors) generating in parallel.")
    resources: StageResources = Field(default_factory=StageResources)
    output: str | None = Field(
        None, description="Fixed output path (.jsonl or a directory) so a re-run of the job resumes it; "
        "default: the run directory. A CLI --output wins."
    )
    if_changed: Literal["refuse", "new_output", "overwrite"] = Field(
        "refuse",
        description="When the output holds samples made with another model/prompt/sampling: refuse (error), "
        "new_output (write next to it under a name with the new fingerprint) or overwrite (discard it).",
    )
    retry_errors: bool = Field(
        False, description="On a resumed output, generate again the samples that ended with an error "
        "(their error records are removed first)."
    )
    hf: HFSettings = Field(default_factory=HFSettings)
    vllm: VLLMEngineSettings = Field(default_factory=VLLMEngineSettings)
    llamacpp: LlamaCppSettings = Field(default_factory=LlamaCppSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    recorded: RecordedSettings = Field(default_factory=RecordedSettings)

    @model_validator(mode="after")
    def _backend_fits(self) -> "GenerateConfig":
        problem = backend_class(self.backend).config_problem(self)
        if problem:
            raise ValueError(problem)
        return self


class SampleSampling(BaseModel):
    """How one sample was drawn: the stage's sampling with the sample's own seed."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int = Field(description="The sample's own seed (derived from the base seed and its id).")


class GenerateLineage(ModelLineage, stage="generate"):
    """How one sample was generated: by which backend (each backend's subclass below adds its settings, as
    ``Backend.describe`` gives them), with which sampling, and what the request cost."""

    markers: str | None = Field(None, description="The thought markers asked for.")
    sampling: SampleSampling | None = Field(None, description="How the sample was drawn (not for a recording).")
    seconds: float | None = Field(None, description="Wall time of the request, or of the batch it was in.")
    attempts: int = Field(1, description="Requests made, retries counted (written when not 1).")
    engine_load_s: float | None = Field(None, description="On an actor's first block: its model load.")

    def adding(self, **more: Any) -> "GenerateLineage":
        """This detail with ``more`` set too, validated as this class."""
        return self.model_validate({**self.model_dump(exclude_unset=True), **more})


class HFLineage(GenerateLineage):
    adapter: str | None = Field(None, description="The PEFT adapter on the model.")
    batch_size: int = Field(description="Prompts per batch.")


class LlamaCppLineage(GenerateLineage):
    gguf: str = Field(description="The GGUF file run.")
    weights: str = Field("as_stored", description="How llama.cpp stored its weights (llamacpp.weights).")
    batch_size: int = Field(description="Prompts per batch.")
    sequences: int = Field(description="Sequences decoded together.")


class OpenAILineage(GenerateLineage):
    base_url: str = Field(description="The endpoint.")
    served_model: str = Field(description="The model name sent.")


class RecordedLineage(GenerateLineage):
    recording: str | None = Field(None, description="The recording's path.")
    tokenizer: str = Field(description="The tokenizer that counted tokens.")
    recording_line: int | None = Field(None, description="The answer's line in the recording.")


class VLLMLineage(GenerateLineage):
    tensor_parallel_size: int = Field(description="GPUs one replica shards over.")
    pipeline_parallel_size: int = Field(description="Pipeline stages per replica.")
    max_model_len: int | None = Field(None, description="The engines' context length.")
    replicas: int = Field(description="Engine replicas.")
