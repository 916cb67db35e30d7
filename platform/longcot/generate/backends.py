"""The backends behind ``backend.Backend``; ``make_backend(config)`` picks one from the config.

- ``hf``: ``HFGenerator`` in a Ray Data actor pool (``map_batches`` + ``ActorPoolStrategy``).
- ``openai``: ``OpenAIClient`` in the same kind of actor pool, the qps limit shared out among the actors.
- ``vllm``: ``ray.data.llm`` (``vLLMEngineProcessorConfig`` + ``build_processor``), GPU replicas. Only
  ``ray.data.llm``'s config classes are imported on the driver; vLLM itself is needed on the GPU workers.
- ``llamacpp``: ``LlamaCppGenerator`` (llama.cpp on a GGUF file, several sequences per batch) in the same
  kind of actor pool, on CPU; llama-cpp-python is an optional extra, checked before any actor starts.
- ``recorded``: ``RecordedTeacher`` in the same kind of actor pool, answering from a recording of a
  teacher's responses (``generate.recorded``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
from pydantic import SecretStr

from longcot import records
from longcot.cluster import require_resources
from longcot.dataflow import BatchFn, StageFn
from longcot.errors import ConfigError, InputError, RejectRow, ResourceError
from longcot.generate.backend import Backend, Completion, Engine
from longcot.generate.config import (
    GenerateConfig,
    GenerateLineage,
    HFLineage,
    LlamaCppLineage,
    OpenAILineage,
    RecordedLineage,
    RecordedSettings,
    SamplingConfig,
    VLLMLineage,
)
from longcot.generate.samples import STAGE, complete_rows, fill_completion, sampling_detail


class EngineRows:
    """Sample records -> generated records, by an engine built once (``make_engine``; once per actor of the
    pool). The records of the first batch carry ``engine_load_s`` in their lineage: how long building the engine
    (loading the model) took, which the stage reports apart from the actor's own start (``stage.PhaseClock``)."""

    def __init__(self, make_engine: Callable[[], Engine], sampling: SamplingConfig, model: str,
                 detail: GenerateLineage):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars from every actor would bury the stage's own
        started = time.perf_counter()
        self.engine = make_engine()
        self.load_seconds: float | None = round(time.perf_counter() - started, 3)
        self.sampling, self.model, self.detail = sampling, model, detail

    def __call__(self, rows: list[dict]) -> list[dict]:
        detail = self.detail if self.load_seconds is None else self.detail.adding(engine_load_s=self.load_seconds)
        self.load_seconds = None
        return complete_rows(rows, self.engine, self.sampling, model=self.model, detail=detail)


class RecordedRows:
    """Sample records -> records answered from a recording, loaded once (per actor of the pool)."""

    def __init__(self, settings: RecordedSettings, model: str, detail: GenerateLineage):
        from longcot.generate.recorded import RecordedTeacher

        self.teacher = RecordedTeacher(settings)
        self.model, self.detail = model, detail

    def __call__(self, rows: list[dict]) -> list[dict]:
        return [fill_completion(row, completion, model=self.model, detail=self.detail, recording_line=line)
                for row, (completion, line) in zip(rows, self.teacher.answer(rows))]


class PoolBackend(Backend):
    """A backend that maps its sample records in a Ray Data actor pool of ``concurrency`` actors, each building
    its batch function once (``dataflow.StageFn``); a batch whose function raises is rejected with the reason."""

    def rows_fn(self) -> Callable[[], BatchFn]:
        """The picklable factory each actor calls once to build its function of a batch of sample records."""
        raise NotImplementedError

    def check_local(self) -> None:
        """``ConfigError`` for what no worker in this process can do without (an API key, a package, a file)."""

    def check(self) -> None:
        self.check_local()  # on the driver: a missing package, key or file fails here, once, not in every actor
        require_resources(self.config.resources, f"generate ({self.name} backend)", count=self.config.concurrency)

    def compute(self) -> Any:
        """The actor pool: ``concurrency`` actors, one batch at a time each (a model engine is busy with one)."""
        import ray.data

        return ray.data.ActorPoolStrategy(size=self.config.concurrency)

    def apply(self, ds: Any) -> Any:
        return ds.map_batches(
            StageFn,
            fn_constructor_kwargs={"fn": self.rows_fn(), "stage": STAGE, "batch": True, "build": True},
            batch_format="pyarrow",
            batch_size=self.config.batch_size,
            compute=self.compute(),
            **self.config.resources.ray_remote_args(),
        )


class EngineBackend(PoolBackend):
    """A backend that runs an in-process engine (``make_engine``) in each actor of the pool."""

    def make_engine(self) -> Callable[[], Engine]:
        raise NotImplementedError

    def rows_fn(self) -> Callable[[], BatchFn]:
        return functools.partial(EngineRows, self.make_engine(), self.config.sampling, self.config.model,
                                 self.describe())


class ChatTemplate:
    """Rendering with ``config.model``'s own chat template: the prompt a local model is sent."""

    config: GenerateConfig

    @functools.cached_property
    def tokenizer(self):
        from longcot.models import text_tokenizer

        return text_tokenizer(self.config.model)

    def render(self, messages: list[dict]) -> str:
        from longcot.generate.prompting import render_prompt

        return render_prompt(self.tokenizer, messages)


class HFBackend(ChatTemplate, EngineBackend):
    name = "hf"
    applies_adapters = True

    def make_engine(self) -> Callable[[], Engine]:
        from longcot.generate.hf import HFGenerator

        hf = self.config.hf
        return functools.partial(
            HFGenerator, self.config.model, adapter=hf.adapter, device=hf.device, dtype=hf.dtype,
            batch_size=self.config.batch_size,
        )

    def describe(self) -> HFLineage:
        return HFLineage(backend=self.name, model=self.config.model, adapter=self.config.hf.adapter,
                         markers=self.config.markers, batch_size=self.config.batch_size)

    def identity(self) -> dict[str, Any]:
        # the dtype as resolved: bf16 and fp32 greedy outputs differ in some samples, so a resumed output
        # never mixes the two (an fp32 output made before auto meant bf16 here is refused, not extended)
        return {"adapter": self.config.hf.adapter, "dtype": self.resolved_dtype()}

    def resolved_dtype(self) -> str:
        """What ``hf.dtype`` means on the device the actors will use, as far as the driver can tell."""
        from longcot.models import weights_dtype

        hf = self.config.hf
        on_gpu = self.config.resources.num_gpus > 0 or hf.device.startswith("cuda")
        return weights_dtype(hf.dtype, "cuda" if on_gpu else "cpu")

    def weights_dtype(self) -> str:
        hf = self.config.hf
        return f"auto: {self.resolved_dtype()}" if hf.dtype == "auto" else hf.dtype


class LlamaCppBackend(ChatTemplate, EngineBackend):
    """llama.cpp on a GGUF file in each actor; prompts rendered and tokens counted with ``model``'s Hugging Face
    tokenizer, as the hf backend does, so the two write the same records."""

    name = "llamacpp"

    @classmethod
    def config_problem(cls, config: GenerateConfig) -> str | None:
        from longcot.models import is_embedded

        problem = super().config_problem(config)
        if problem or config.llamacpp.gguf or is_embedded(config.model):
            return problem
        return (f"llamacpp.gguf: the llamacpp backend runs a GGUF file; {config.model!r} is not an embedded model "
                "that ships one, so give the file's path")

    def gguf(self) -> str:
        """The GGUF file the engines load: ``llamacpp.gguf``, else the embedded model's own."""
        from longcot.models import EMBEDDED_PREFIX, gguf_path

        return self.config.llamacpp.gguf or str(gguf_path(self.config.model[len(EMBEDDED_PREFIX) :]))

    def check_local(self) -> None:
        from longcot.generate.llamacpp import import_llama_cpp

        import_llama_cpp()
        if not Path(self.gguf()).is_file():
            raise ConfigError(f"generate.llamacpp.gguf: no such GGUF file: {self.gguf()}")

    def make_engine(self) -> Callable[[], Engine]:
        from longcot.generate.llamacpp import LlamaCppGenerator

        ll = self.config.llamacpp
        return functools.partial(
            LlamaCppGenerator, self.config.model, gguf=self.gguf(), weights=ll.weights,
            sequences=ll.sequences or self.config.batch_size,
            threads=ll.threads or max(1, int(self.config.resources.num_cpus)),
        )

    def describe(self) -> LlamaCppLineage:
        return LlamaCppLineage(backend=self.name, model=self.config.model, gguf=self.gguf(),
                               weights=self.config.llamacpp.weights, markers=self.config.markers,
                               batch_size=self.config.batch_size, sequences=self.config.llamacpp.sequences or self.config.batch_size)

    def identity(self) -> dict[str, Any]:
        from longcot.rundir import hash_path

        return {"gguf_sha256": hash_path(self.gguf()), "weights": self.config.llamacpp.weights}

    def weights_dtype(self) -> str:
        weights = self.config.llamacpp.weights
        stored = "as stored in" if weights == "as_stored" else f"{weights}, converted from"
        return f"{stored} {Path(self.gguf()).name} (llama.cpp)"


class OpenAIBackend(EngineBackend):
    """Chat requests to ``openai.base_url``; the record's ``prompt`` is the JSON list of chat messages."""

    name = "openai"

    def api_key(self) -> SecretStr | None:
        """The key from ``openai.api_key_env`` (None: an endpoint without auth); ``ConfigError`` when unset."""
        env = self.config.openai.api_key_env
        if not env:
            return None
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"generate.openai.api_key_env: environment variable {env} is not set "
                "(export it, or set api_key_env to null for an endpoint without auth)"
            )
        return SecretStr(value)

    def check_local(self) -> None:
        self.api_key()

    def make_engine(self) -> Callable[[], Engine]:
        from longcot.generate.openai import OpenAIClient

        return functools.partial(OpenAIClient, self.config.openai, self.config.model, api_key=self.api_key(),
                                 workers=self.config.concurrency, markers=self.config.markers)

    def compute(self) -> Any:
        """Several batches in flight per actor, on threads sharing the actor's client (its limiter and its
        ``max_in_flight`` connections): one batch lasts as long as its slowest answer, so an actor that ran
        one at a time would leave the rate limit unused while a long-tail answer is awaited
        (``bench/bench_openai_teacher.py``: 0.47 of the rate one at a time, 0.99 this way)."""
        import ray.data

        calls = math.ceil(self.config.openai.max_in_flight / self.config.batch_size) + 1
        return ray.data.ActorPoolStrategy(size=self.config.concurrency, max_concurrent_calls_per_actor=calls,
                                          max_tasks_in_flight_per_actor=calls, enable_true_multi_threading=True)

    def describe(self) -> OpenAILineage:
        o = self.config.openai
        return OpenAILineage(backend=self.name, model=self.config.model, base_url=o.base_url,
                             served_model=o.served_model or self.config.model, markers=self.config.markers)

    def identity(self) -> dict[str, Any]:
        # the served model, not the URL: a mirror of the same model may finish a run
        return {"served_model": self.config.openai.served_model}

    def weights_dtype(self) -> str:
        return "set by the server"


class RecordedBackend(PoolBackend):
    """Answers from a recording of a teacher's responses (``generate.recorded``); see ``generate.recorded``.
    The record's ``prompt`` is the JSON list of chat messages the teacher would have been sent."""

    name = "recorded"

    @classmethod
    def config_problem(cls, config: GenerateConfig) -> str | None:
        problem = super().config_problem(config)
        if problem or config.recorded.path:
            return problem
        return "recorded.path: the recorded backend needs the file of recorded responses"

    def __init__(self, config: GenerateConfig):
        super().__init__(config)
        path = config.recorded.path  # set: config_problem
        if not Path(path).is_file():
            raise InputError("no such recording (generate.recorded.path)", path)

    def check_local(self) -> None:
        from longcot.generate.recorded import Recording

        Recording(self.config.recorded)

    def rows_fn(self) -> Callable[[], BatchFn]:
        return functools.partial(RecordedRows, self.config.recorded, self.config.model, self.describe())

    def weights_dtype(self) -> str:
        return "none: recorded responses"

    def describe(self) -> RecordedLineage:
        return RecordedLineage(backend=self.name, model=self.config.model, recording=self.config.recorded.path,
                               markers=self.config.markers, tokenizer=self.config.recorded.tokenizer)

    def identity(self) -> dict[str, Any]:
        from longcot.rundir import hash_path

        recorded = self.config.recorded
        return {"recording_sha256": hash_path(recorded.path), "recording_fields": recorded.fields.model_dump(),
                "tokenizer": recorded.tokenizer}


class VLLMBackend(ChatTemplate, Backend):
    """``ray.data.llm`` vLLM replicas: ``concurrency`` engines of ``tensor_parallel_size`` x
    ``pipeline_parallel_size`` GPUs each. Prompts are rendered on the driver (the record keeps them), so
    the processor's chat-template stage is off and vLLM tokenizes and detokenizes itself.

    One bad row never fails its batch. A prompt vLLM would refuse (empty, or with no room left under
    ``max_model_len``) is rejected on the driver with its reason (``render`` raises ``RejectRow``) and never
    reaches an engine; a row the engine still fails on comes back as an error record
    (``should_continue_on_error``), which ``retry_errors`` generates again.
    """

    name = "vllm"

    def render(self, messages: list[dict]) -> str:
        """The prompt vLLM is sent; ``RejectRow`` when vLLM would refuse it (``vllm_prompt_problem``)."""
        prompt = super().render(messages)
        limit = self.max_model_len()
        # counted as vLLM counts a text prompt: encoded with the tokenizer's special tokens
        tokens = len(self.tokenizer.encode(prompt)) if limit and prompt.strip() else 0
        problem = vllm_prompt_problem(prompt, tokens, limit)
        if problem:
            raise RejectRow(problem)
        return prompt

    def max_model_len(self) -> int | None:
        """The context length the engines run with, when the config sets it (else vLLM takes the model's)."""
        return self.engine_kwargs().get("max_model_len")

    def gpus_per_replica(self) -> int:
        v = self.config.vllm
        return v.tensor_parallel_size * v.pipeline_parallel_size

    def engine_kwargs(self) -> dict[str, Any]:
        v = self.config.vllm
        named = {"tensor_parallel_size", "pipeline_parallel_size", "max_model_len", "gpu_memory_utilization"}
        return {**v.engine_kwargs, **v.model_dump(include=named, exclude_none=True)}

    def processor_config(self):
        """The ``vLLMEngineProcessorConfig`` this backend runs (built without importing vLLM)."""
        from ray.data.llm import vLLMEngineProcessorConfig

        from longcot.models import resolve

        return vLLMEngineProcessorConfig(
            model_source=resolve(self.config.model),
            engine_kwargs=self.engine_kwargs(),
            concurrency=self.config.concurrency,
            batch_size=self.config.batch_size,
            accelerator_type=self.config.resources.accelerator_type,
            chat_template_stage=False,
            tokenize_stage=False,
            detokenize_stage=False,
            should_continue_on_error=True,  # a failed row becomes an error record, the job goes on
            **self.config.vllm.model_dump(include={"runtime_env", "max_concurrent_batches"}, exclude_none=True),
        )

    def check(self) -> None:
        per_node = self.config.resources.model_copy(update={"num_gpus": self.config.vllm.tensor_parallel_size})
        try:
            require_resources(per_node, "generate (vllm backend)",
                              count=self.config.concurrency * self.config.vllm.pipeline_parallel_size)
        except ResourceError as exc:
            raise ResourceError(
                f"the vllm backend needs GPUs: {self.gpus_per_replica()} per replica "
                f"(tensor_parallel_size x pipeline_parallel_size) x {self.config.concurrency} replicas. {exc} "
                "On a cluster without GPUs use backend: hf (or openai against a served model)."
            ) from None

    def apply(self, ds: Any) -> Any:
        from ray.data.llm import build_processor

        processor = build_processor(self.processor_config())
        sampling, model, detail, limit = self.config.sampling, self.config.model, self.describe(), self.max_model_len()
        requests = ds.map_batches(  # record blocks -> the vLLM stage's rows
            lambda table: pa.Table.from_pylist(vllm_requests(records.from_table(table), sampling=sampling)),
            batch_format="pyarrow", batch_size=self.config.batch_size)
        return processor(requests).map_batches(  # the vLLM stage's rows -> record blocks
            lambda table: records.to_table(vllm_records(table.to_pylist(), sampling=sampling, model=model,
                                                        detail=detail, max_model_len=limit)),
            batch_format="pyarrow")

    def weights_dtype(self) -> str:
        return str(self.config.vllm.engine_kwargs.get("dtype", "auto (vLLM: the checkpoint's dtype)"))

    def describe(self) -> VLLMLineage:
        v = self.config.vllm
        return VLLMLineage(backend=self.name, model=self.config.model, markers=self.config.markers,
                           tensor_parallel_size=v.tensor_parallel_size,
                           pipeline_parallel_size=v.pipeline_parallel_size, max_model_len=v.max_model_len,
                           replicas=self.config.concurrency)


def vllm_requests(rows: list[dict], *, sampling: SamplingConfig) -> list[dict]:
    """Sample records -> rows for the vLLM stage: prompt, sampling params (the sample's own seed), and the record
    as JSON."""
    return [{"prompt": row["prompt"], "sampling_params": sampling_detail(sampling, row["id"]).model_dump(),
             "record": json.dumps(row, ensure_ascii=False, default=str)} for row in rows]


def vllm_prompt_problem(prompt: str, prompt_tokens: int, max_model_len: int | None) -> str | None:
    """Why vLLM would refuse ``prompt`` of ``prompt_tokens`` tokens (None: it can be sent).

    vLLM refuses an empty prompt and one longer than the context; one that fills the context leaves no room
    for a single new token, so it is refused here too. Without ``max_model_len`` only emptiness is known.
    """
    if not prompt.strip():
        return "the rendered prompt is empty"
    if max_model_len and prompt_tokens >= max_model_len:
        return (f"the prompt is {prompt_tokens} tokens, which leaves no room to generate within "
                f"generate.vllm.max_model_len {max_model_len}")
    return None


def vllm_records(rows: list[dict], *, sampling: SamplingConfig, model: str, detail: GenerateLineage,
                 max_model_len: int | None = None) -> list[dict]:
    """Rows out of the vLLM stage -> generated records, one per row, failed rows included.

    A row the engine failed on (``__inference_error__``, kept by ``should_continue_on_error``) becomes an
    error record with vLLM's message. ``finish_reason`` is ``length`` when the sample used its ``max_tokens``
    or filled the context (``max_model_len``), else ``stop``.
    """
    out = []
    for row in rows:
        record = json.loads(row["record"])
        error = row.get("__inference_error__") or None
        n_in = int(row.get("num_input_tokens") or 0)
        n_out = int(row.get("num_generated_tokens") or 0)
        seconds = row.get("time_taken_llm")
        seconds = float(seconds) if seconds is not None and seconds >= 0 else None
        if error:
            completion = Completion.failed(str(error), seconds=seconds)
        else:
            capped = n_out >= sampling.max_tokens or bool(max_model_len and n_in + n_out >= max_model_len)
            completion = Completion(row.get("generated_text") or "", n_in, n_out, "length" if capped else "stop",
                                    None, seconds)
        out.append(fill_completion(record, completion, model=model, detail=detail,
                                   sampling=sampling_detail(sampling, record["id"])))
    return out


@dataclasses.dataclass
class LocalEngine:
    """An engine built in this process with the way its backend renders chat messages: what the DLCoT judge
    and rewriter (and any other in-process caller) talk to, whatever the backend."""

    engine: Engine
    render: Callable[[list[dict]], str]

    def generate(self, prompts: list[str], **kwargs) -> list[Completion]:
        return self.engine.generate(prompts, **kwargs)

    def chat(self, conversations: list[list[dict]], **kwargs) -> list[Completion]:
        """One completion per list of chat messages."""
        return self.engine.generate([self.render(m) for m in conversations], **kwargs)


@functools.lru_cache(maxsize=4)
def _local_engine(config_json: str) -> LocalEngine:
    backend = make_backend(GenerateConfig.model_validate_json(config_json))
    if not isinstance(backend, EngineBackend):
        raise ConfigError(f"the {backend.name} backend runs on Ray Data only; use hf or openai for an engine in "
                          "this process")
    backend.check_local()
    return LocalEngine(backend.make_engine()(), backend.render)


def local_engine(config: GenerateConfig) -> LocalEngine:
    """The engine of ``config`` built in this process, once per process and config (a worker reuses it)."""
    return _local_engine(config.model_dump_json())


BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend for backend in (HFBackend, OpenAIBackend, VLLMBackend, RecordedBackend, LlamaCppBackend)
}


def make_backend(config: GenerateConfig) -> Backend:
    return BACKENDS[config.backend](config)
