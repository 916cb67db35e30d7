"""The OpenAI wire protocol, as pydantic models: what a request may contain and what a response looks like
(the openai SDK's own response models).

Requests are strict: a wrong type is an error (``"5"`` is not an integer), an unknown argument is an
error (as the OpenAI API does), and options this server cannot honour (logprobs, penalties, tools) are
refused by name instead of being silently ignored. ``openai_error`` turns any refusal into the OpenAI
error object ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any, Literal

from openai.types import Completion, CompletionChoice, CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from longcot.serve.reasoning import ReasoningSplit, ReasoningStream, split_reasoning

MAX_STOP_SEQUENCES = 4
_UNSUPPORTED = "not supported by this server"
# options this server cannot honour, accepted only at their neutral value (null, false, 0): refusing is
# better than ignoring what a client relies on
REFUSED = {
    "presence_penalty": "penalties are not supported by this server; leave it at 0",
    "frequency_penalty": "penalties are not supported by this server; leave it at 0",
    "logprobs": f"logprobs are {_UNSUPPORTED}",
    "echo": f"echo is {_UNSUPPORTED}",
    "suffix": _UNSUPPORTED,
    "best_of": _UNSUPPORTED,
}


class RequestModel(BaseModel):
    # extra="forbid" and strict=True are a guarantee (unknown arguments and wrong types are refused, never
    # coerced); NaN and infinities are no numbers a client means: refused by name ("Input should be a finite number")
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(RequestModel):
    type: Literal["text"]
    text: str


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    reasoning_content: str | None = None  # clients echo it back in the history; it is not shown to the model

    def for_template(self) -> dict[str, str]:
        # chat templates know system/user/assistant; OpenAI's "developer" is the newer name for system
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(RequestModel):
    include_usage: bool = False


class SamplingRequest(RequestModel):
    """Fields shared by chat and text completions."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = Field(None, validate_default=True)  # validated into a list[str]
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool | int | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @field_validator(*REFUSED, check_fields=False)
    @classmethod
    def _refused(cls, value: Any, info: ValidationInfo) -> Any:
        if value not in (None, False, 0):
            raise ValueError(REFUSED[info.field_name])
        return value


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    # vLLM-style extensions (sent with the openai client's extra_body)
    reasoning_format: Literal["split", "raw"] | None = None
    continue_final_message: bool = False
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _one_limit(self) -> "ChatCompletionRequest":
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        if self.continue_final_message and self.messages[-1].role != "assistant":
            raise ValueError("continue_final_message needs the last message to be the assistant's")
        return self


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]  # validated into a list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, value: str | list[str]) -> list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not prompts:
            raise ValueError("prompt must not be an empty list")
        if any(not text.strip() for text in prompts):
            raise ValueError("prompt must not be empty: there is nothing to complete")
        return prompts


# ---------------------------------------------------------------------------------------------- responses
# Responses are the openai SDK's own models, which allow extra fields: ``reasoning_content`` (the
# DeepSeek/vLLM extension) rides along as one. A whole response is dumped with ``exclude_unset`` (what the
# endpoint set, nulls included, and none of the SDK's other optional fields), a streamed chunk with
# ``exclude_none``.


def usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    return CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                           total_tokens=prompt_tokens + completion_tokens)


class TextAnswer:
    """One request's answer on ``/v1/completions``: whole (``choice``, ``response``) or streamed (``opening``,
    ``feed``, ``close``, then ``chunk`` with the finish reason, and with the usage)."""

    prefix, object, response_type = "cmpl", "text_completion", Completion
    reasoning: ReasoningStream | None = None  # what splits a streamed thought from the answer

    def __init__(self, model: str):
        self.id, self.created, self.model = f"{self.prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), model

    def choice(self, index: int, text: str, finish: str) -> BaseModel:
        return CompletionChoice(index=index, text=text, finish_reason=finish)

    def response(self, choices: list, usage: CompletionUsage | None = None) -> BaseModel:
        return self.response_type(id=self.id, object=self.object, created=self.created, model=self.model,
                                  choices=choices, usage=usage)

    def chunk(self, finish: str | None = None, usage: CompletionUsage | None = None, content: str = "") -> BaseModel:
        # the SDK's choice wants a finish_reason, which every chunk but the last leaves null: built unvalidated
        choices = [] if usage is not None else [CompletionChoice.model_construct(index=0, text=content, finish_reason=finish)]
        return self.response(choices, usage)

    def opening(self) -> list[BaseModel]:
        return []

    def feed(self, text: str) -> list[BaseModel]:
        return self._chunks(self.reasoning.feed(text) if self.reasoning else [("content", text)] if text else [])

    def close(self) -> list[BaseModel]:
        return self._chunks(self.reasoning.close() if self.reasoning else [])

    def _chunks(self, pieces: list[tuple[str, str]]) -> list[BaseModel]:
        return [self.chunk(**{"reasoning_content" if kind == "reasoning" else "content": text}) for kind, text in pieces]


class ChatAnswer(TextAnswer):
    """The same on ``/v1/chat/completions``; ``split``: the thought goes to ``reasoning_content`` (``opened``: the
    prompt already opened it)."""

    prefix, object, response_type = "chatcmpl", "chat.completion", ChatCompletion

    def __init__(self, model: str, split: bool, opened: str | None):
        super().__init__(model)
        self.split, self.opened = split, opened
        self.reasoning = ReasoningStream(opened) if split else None

    def choice(self, index: int, text: str, finish: str) -> BaseModel:
        parts = split_reasoning(text, opened=self.opened, finish_reason=finish) if self.split else ReasoningSplit(None, text)
        # reasoning_content is always set, so a reply without reasoning says null
        message = ChatCompletionMessage(role="assistant", content=parts.content, reasoning_content=parts.reasoning)
        return Choice(index=index, message=message, finish_reason=finish, logprobs=None)

    def chunk(self, finish: str | None = None, usage: CompletionUsage | None = None, **delta: str) -> BaseModel:
        choices = [] if usage is not None else [ChunkChoice(index=0, delta=ChoiceDelta(**delta), finish_reason=finish)]
        return ChatCompletionChunk(id=self.id, object="chat.completion.chunk", created=self.created, model=self.model,
                                   choices=choices, usage=usage)

    def opening(self) -> list[BaseModel]:
        return [self.chunk(role="assistant", content="")]


def openai_error(message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# the union members pydantic tried show in an error's location (also "list[...]", "function-..."): not in the body
_UNION_TAGS = {"str", "int", "bool", "float", "none"}


def error_param(loc: tuple | list) -> str | None:
    """A pydantic error location inside the body as the OpenAI ``param``, e.g. ``messages[0].role``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (part in _UNION_TAGS or "[" in part or part.startswith("function-")):
            out += f".{part}" if out else part
    return out or None


def validation_error(errors: list[dict]) -> tuple[str, str | None]:
    """``(message, param)`` for pydantic validation errors: one problem per top-level field.

    Of a union's failures (one per member tried) the one that got deepest into the input is kept: for
    ``"prompt": ["a", 3]`` that is ``prompt[1]`` (a list member), not ``prompt`` (the string member).
    """
    by_field = itertools.groupby(errors, key=lambda err: err["loc"][:1])  # pydantic lists a field's errors together
    # the first problem is told in full, the others by their param
    first, *others = (max(group, key=lambda err: len(err["loc"])) for _, group in by_field)
    param = error_param(first["loc"])
    if first.get("type") == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    else:
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        message = f"{param}: {msg}" if param else msg
    if others:
        message += f" (and {len(others)} more: {', '.join(str(error_param(err['loc'])) for err in others)})"
    return message, param
