"""The OpenAI wire protocol, as pydantic models: what a request may contain and what a response looks like
(for chat, the openai SDK's own response models).

Requests are strict: a wrong type is an error (``"5"`` is not an integer), an unknown argument is an
error (as the OpenAI API does), and options this server cannot honour (logprobs, penalties, tools) are
refused by name instead of being silently ignored. ``openai_error`` turns any refusal into the OpenAI
error object ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from openai.types.chat import ChatCompletionMessage
from openai.types.completion_usage import CompletionUsage
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP_SEQUENCES = 4


class RequestModel(BaseModel):
    # NaN and infinities are no numbers a client means: refused by name ("Input should be a finite number")
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(RequestModel):
    type: Literal["text"]
    text: str


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    reasoning_content: str | None = None  # clients echo it back in the history; it is not shown to the model

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict[str, str]:
        # chat templates know system/user/assistant; OpenAI's "developer" is the newer name for system
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


class StreamOptions(RequestModel):
    include_usage: bool = False


class SamplingRequest(RequestModel):
    """Fields shared by chat and text completions."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # accepted only at their neutral values: refusing is better than ignoring what a client relies on
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool | int | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("penalties are not supported by this server; leave it at 0")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | int | None) -> bool | int | None:
        if value:
            raise ValueError("logprobs are not supported by this server")
        return value

    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


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
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        if any(not text.strip() for text in ([value] if isinstance(value, str) else value)):
            raise ValueError("prompt must not be empty: there is nothing to complete")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported by this server")
        return value

    @field_validator("suffix", "best_of")
    @classmethod
    def _unsupported(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("not supported by this server")
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# ---------------------------------------------------------------------------------------------- responses
# Chat responses are the openai SDK's own models, which allow extra fields: ``reasoning_content`` (the
# DeepSeek/vLLM extension) rides along as one. A whole response is dumped with ``exclude_unset`` (what the
# endpoint set, nulls included, and none of the SDK's other optional fields), a streamed chunk with
# ``exclude_none``. Text completions keep models of their own: the SDK's want a finish_reason on every chunk.


def usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    return CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                           total_tokens=prompt_tokens + completion_tokens)


def assistant_message(content: str | None, reasoning: str | None = None) -> ChatCompletionMessage:
    """The reply; ``reasoning_content`` is always set, so a reply without reasoning says null."""
    return ChatCompletionMessage(role="assistant", content=content, reasoning_content=reasoning)


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: CompletionUsage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "longcot"
    root: str | None = None  # what the id serves: the model reference (and adapter)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def openai_error(message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


_UNION_TAGS = {"str", "int", "bool", "float", "none"}


def error_param(loc: tuple | list) -> str | None:
    """A pydantic error location inside the body as the OpenAI ``param``, e.g. ``messages[0].role``."""
    out = ""
    for part in loc:
        if part == "body":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS or "[" in part or part.startswith("function-"):
            continue  # the member of a union pydantic tried, not a place in the body
        else:
            out += f".{part}" if out else part
    return out or None


def validation_error(errors: list[dict]) -> tuple[str, str | None]:
    """``(message, param)`` for pydantic/FastAPI validation errors: one problem per top-level field.

    Of a union's failures (one per member tried) the one that got deepest into the input is kept: for
    ``"prompt": ["a", 3]`` that is ``prompt[1]`` (a list member), not ``prompt`` (the string member).
    """
    chosen: dict[Any, dict] = {}
    for err in errors:
        loc = [part for part in err.get("loc", ()) if part != "body"]
        field = loc[0] if loc else None
        if field not in chosen or len(loc) > len(chosen[field]["loc"]):
            chosen[field] = {**err, "loc": loc}
    problems = []
    for err in chosen.values():
        param = error_param(err["loc"])
        if err.get("type") == "extra_forbidden":
            problems.append((f"Unrecognized request argument supplied: {param}", param))
        else:
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            problems.append((f"{param}: {msg}" if param else msg, param))
    message, param = problems[0]
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more: {', '.join(str(q) for _, q in problems[1:])})"
    return message, param
