"""What every generation backend returns, and the one interface the stage talks to.

Two levels, so callers never branch on the backend:

- An *engine* lives in one process and turns rendered prompts into ``Completion``s:
  ``engine.generate(prompts, *, max_tokens, temperature, top_p, seed) -> list[Completion]``
  (``HFGenerator`` for transformers, ``LlamaCppGenerator`` for llama.cpp on a GGUF file, ``OpenAIClient`` for
  an HTTP endpoint).
- A ``Backend`` is what the stage holds: it renders prompts, checks the cluster can run it, maps a Ray
  Dataset of sample records to generated records, and describes itself for the lineage. ``hf``, ``llamacpp``
  and ``openai`` run an engine in an actor pool (``EngineBackend``); ``vllm`` hands the dataset to
  ``ray.data.llm``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Collection, Sequence

from longcot.generate.config import GenerateConfig, GenerateLineage


@dataclass
class Completion:
    """One generated sample. ``finish_reason`` is ``stop`` (end of sequence), ``length`` (hit max_tokens)
    or ``error`` (no text; ``error`` says why)."""

    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    error: str | None = None
    seconds: float | None = None  # wall time of the request (or of the batch it was generated in)
    attempts: int = 1  # requests made, counting retries

    @classmethod
    def failed(cls, error: str, *, prompt_tokens: int = 0, seconds: float | None = None, attempts: int = 1) -> "Completion":
        return cls("", prompt_tokens, 0, "error", error, seconds, attempts)


def too_long(prompt_tokens: int, context_length: int | None) -> Completion | None:
    """The error completion of a prompt that leaves no room to generate in the model's context, else None."""
    if context_length and prompt_tokens >= context_length:
        return Completion.failed(f"prompt has {prompt_tokens} tokens; the model's context is {context_length}",
                                 prompt_tokens=prompt_tokens)
    return None


def decoded(tokenizer: Any, tokens: list[int], stop_ids: Collection[int], prompt_tokens: int,
            seconds: float) -> Completion:
    """New tokens as a ``Completion``: cut at the first stop token (counted as generated, not shown) with
    ``finish_reason`` ``stop``, else all of them, ``length``."""
    stop_at = next((k for k, t in enumerate(tokens) if t in stop_ids), None)
    kept, reason = (tokens, "length") if stop_at is None else (tokens[:stop_at], "stop")
    n_out = len(tokens) if stop_at is None else stop_at + 1
    return Completion(tokenizer.decode(kept, skip_special_tokens=True), prompt_tokens, n_out, reason, None, seconds)


@dataclass(frozen=True)
class Sampling:
    """How every prompt of one ``Engine.generate`` call is sampled (``temperature`` 0: greedy)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0


class Engine(ABC):
    """In-process generator: rendered prompts in, one ``Completion`` per prompt out (same order).

    Subclasses implement ``complete``; ``generate`` is the one signature every caller uses.
    """

    def generate(
        self,
        prompts: list[str],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | Sequence[int] | None = None,
    ) -> list[Completion]:
        """``seed`` is one seed for every prompt or one per prompt (``ValueError`` when the count differs);
        ``None`` means unseeded."""
        if seed is None or isinstance(seed, int):
            seeds: list[int | None] = [seed] * len(prompts)
        else:
            seeds = list(seed)
            if len(seeds) != len(prompts):
                raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        return self.complete(prompts, Sampling(max_tokens, temperature, top_p), seeds)

    @abstractmethod
    def complete(self, prompts: list[str], sampling: Sampling, seeds: list[int | None]) -> list[Completion]:
        """``generate`` with one seed per prompt."""


class Backend(ABC):
    """A generation backend as the stage sees it."""

    name: str
    applies_adapters: bool = False  # loads hf.adapter on top of the model (else it needs a merged model)

    def __init__(self, config: GenerateConfig):
        self.config = config

    @classmethod
    def config_problem(cls, config: GenerateConfig) -> str | None:
        """Why ``config`` can never run on this backend, found when the config is loaded; None when it can."""
        if config.hf.adapter and not cls.applies_adapters:
            return f"hf.adapter applies to the hf backend only; for {cls.name} merge the adapter into the model"
        return None

    def render(self, messages: list[dict]) -> str:
        """The ``prompt`` field of a record: what is sent to the model for these chat messages. Here, for a
        backend that is sent the messages themselves rather than a rendered template: their JSON list."""
        return json.dumps(messages, ensure_ascii=False)

    @abstractmethod
    def check(self) -> None:
        """Fail fast (``ResourceError`` / ``ConfigError``) when the connected cluster can never run this."""

    @abstractmethod
    def apply(self, ds: Any) -> Any:
        """Ray Dataset of sample records with ``prompt`` set -> the same records generated, one out per row in
        (``complete_rows``): the generate stage's map step on ``dataflow.run_row_stage``."""

    @abstractmethod
    def describe(self) -> GenerateLineage:
        """Settings recorded in the lineage and summary (never a secret): this backend's lineage class."""

    def weights_dtype(self) -> str:
        """The dtype the model's weights run in, as far as this side can know it (for the eval manifest)."""
        return "not known here"

    def identity(self) -> dict[str, Any]:
        """What else, besides the model, prompt and sampling, decides the samples this backend writes (part of
        an output's fingerprint, so a resumed output never mixes samples made two ways)."""
        return {}
