"""The ``hf`` serving path: a Ray Serve deployment with a FastAPI ingress that speaks the OpenAI API.

Routes: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions`` and
``POST /v1/completions`` (both non-streaming, and streaming as server-sent events ending with
``data: [DONE]``). Generation runs on the generate stage's ``HFGenerator`` (a PEFT adapter applied when
configured). Non-streamed requests go through ``@serve.batch``: requests that arrive together and share
max_tokens/temperature/top_p are generated in one batch (each row keeps its own seed).

Every request is admitted in one place (``_admit``), in this order: API key (401), body size (413),
JSON (400), schema (400, naming the field), model (404), limits (400). Errors are OpenAI error objects;
an unexpected failure is a 500 ``server_error``, never a traceback.

``build_app`` is the application builder, also the ``import_path`` of the written Serve config file.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types import Model
from pydantic import ValidationError
from ray import serve
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from longcot.errors import ConfigError
from longcot.generate.prompting import render_prompt
from longcot.serve import protocol as p
from longcot.serve.config import ServeConfig
from longcot.serve.reasoning import opened_marker
from longcot.serve.stops import StopScanner, cut_at_stop

log = logging.getLogger("longcot.serve")

app = FastAPI(title="longcot", description="OpenAI-compatible endpoint of a longcot model.", docs_url=None, redoc_url=None)


class APIError(StarletteHTTPException):
    """A refusal with its HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(status, message, headers)
        self.type, self.param, self.code = type, param, code


@app.exception_handler(StarletteHTTPException)
async def _error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Every refusal as an OpenAI error object; Starlette's own (an unknown route, a wrong method) too."""
    if not isinstance(exc, APIError):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        exc = APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)
    body = p.openai_error(exc.detail, type=exc.type, param=exc.param, code=exc.code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


MAX_JSON_DEPTH = 32  # a chat request nests a few levels; deeper is no request a client means


def _nests_deeper(value: Any, limit: int) -> bool:
    if not isinstance(value, (dict, list)):
        return False
    return limit == 0 or any(_nests_deeper(v, limit - 1) for v in (value.values() if isinstance(value, dict) else value))


def parse_body(body: bytes | bytearray) -> dict:
    """A request body as a JSON object, or the ``APIError`` (400) that says why it is not one."""
    too_deep = APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")

    def no_constant(name: str):
        raise ValueError(f"{name} is not a JSON number (send a finite number)")

    try:
        data = json.loads(body or b"null", parse_constant=no_constant)
    except RecursionError:  # nested deeper than the parser goes
        raise too_deep from None
    except ValueError as exc:  # a JSONDecodeError, a UnicodeDecodeError, or no_constant's refusal
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise APIError(400, f"the request body is not valid JSON: {getattr(exc, 'msg', exc)}{where}",
                       code="invalid_json") from None
    if _nests_deeper(data, MAX_JSON_DEPTH):
        raise too_deep
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return data


def api_key_digest(env_var: str | None) -> str | None:
    """sha256 of the API key in ``env_var`` (None: no key). Replicas get the digest, never the key."""
    if not env_var:
        return None
    key = os.environ.get(env_var, "")
    if not key.strip():
        raise ConfigError(f"api_key_env: the environment variable {env_var} is not set (or is empty)")
    return hashlib.sha256(key.strip().encode()).hexdigest()


@dataclass(frozen=True)
class Row:
    """One rendered prompt to generate, with its seed and its sampling (rows that share it batch together)."""

    prompt: str
    seed: int | None
    max_tokens: int
    temperature: float
    top_p: float

    def sampling_key(self) -> tuple:
        # greedy decoding ignores top_p, so greedy rows batch together whatever they sent
        return (self.max_tokens, self.temperature, self.top_p if self.temperature > 0 else 1.0)


def generate_rows(engine, rows: list[Row]) -> list:
    """Generate every row, one engine call per distinct sampling; completions in row order."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.sampling_key(), []).append(i)
    done: dict[int, Any] = {}
    for (max_tokens, temperature, top_p), members in groups.items():
        outs = engine.generate([rows[i].prompt for i in members], max_tokens=max_tokens, temperature=temperature,
                               top_p=top_p, seed=[rows[i].seed for i in members])
        done.update(zip(members, outs))
    return [done[i] for i in range(len(rows))]


def render_chat(tokenizer, messages: list[dict], *, default_system: str | None = None,
                add_generation_prompt: bool = True, continue_final_message: bool = False) -> str:
    """The prompt of a chat request: the served student's system turn first when the request has none
    (``default_system``, from its card), then the chat template exactly as training applied it."""
    if default_system and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": default_system}] + list(messages)
    if continue_final_message or not add_generation_prompt:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                             continue_final_message=continue_final_message)
    return render_prompt(tokenizer, messages)


def _sse(payload: Any) -> str:
    data = payload if isinstance(payload, str) else payload.model_dump_json(exclude_none=True)
    return f"data: {data}\n\n"


@serve.deployment(name="OpenAIServer")
@serve.ingress(app)
class OpenAIServer:
    """One model replica: loads the model once, answers OpenAI requests."""

    def __init__(self, settings: dict, api_key_sha256: str | None = None):
        from longcot.generate.hf import HFGenerator
        from longcot.train.card import load_card

        self.config = ServeConfig.model_validate(settings)
        self.model_id = self.config.model_id()
        self.limits = self.config.limits
        self._key_digest = api_key_sha256
        self.engine = HFGenerator(
            self.config.model, adapter=self.config.adapter, device=self.config.device, dtype=self.config.dtype,
            batch_size=self.config.batching.max_batch_size,
        )
        card = load_card(self.config.adapter, self.config.model)
        self.default_system = card.prompt.system_prompt if card is not None else None
        self.generate_batched.set_max_batch_size(self.config.batching.max_batch_size)
        self.generate_batched.set_batch_wait_timeout_s(self.config.batching.batch_wait_timeout_s)
        self.created = int(time.time())
        self.batches = {"batches": 0, "rows": 0, "largest": 0}  # how well batching works, shown by /health
        log.info("serving %s (model %s, adapter %s)", self.model_id, self.config.model, self.config.adapter)

    # ------------------------------------------------------------------ admission

    async def _admit(self, request: Request, schema: type[p.RequestModel]):
        """Authorise, read, parse and validate a request (max_tokens defaulted); ``APIError`` for every refusal."""
        self._authorise(request)
        declared = request.headers.get("content-length")
        limit = self.limits.max_body_bytes
        if declared and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                           code="request_too_large")
        received = bytearray()
        async for chunk in request.stream():
            received += chunk
            if len(received) > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
        try:
            body = schema.model_validate(parse_body(received))
        except ValidationError as exc:
            message, param = p.validation_error(exc.errors())
            raise APIError(400, message, param=param) from None
        if body.model != self.model_id:
            raise APIError(404, f"The model '{body.model}' does not exist; this endpoint serves '{self.model_id}'",
                           param="model", code="model_not_found")
        body.max_tokens = body.max_tokens or min(self.limits.default_max_tokens, self.limits.max_tokens)
        if body.max_tokens > self.limits.max_tokens:
            raise APIError(400, f"max_tokens: {body.max_tokens} exceeds this server's limit of {self.limits.max_tokens}",
                           param="max_tokens")
        if body.n > self.limits.max_n:
            raise APIError(400, f"n: at most {self.limits.max_n} choices per request", param="n")
        if body.stream and body.n > 1:
            raise APIError(400, "n: streaming supports one choice per request", param="n")
        return body

    def _authorise(self, request: Request) -> None:
        if self._key_digest is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            refusal = "Missing API key: send it as 'Authorization: Bearer KEY'"
        elif not hmac.compare_digest(hashlib.sha256(token.strip().encode()).hexdigest(), self._key_digest):
            refusal = "Incorrect API key provided"
        else:
            return
        raise APIError(401, refusal, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def _check_prompt(self, prompt: str, param: str) -> int:
        tokens = self.engine.count_tokens(prompt)
        context = self.engine.context_length
        limit = min(self.limits.max_prompt_tokens, context - 1) if context else self.limits.max_prompt_tokens
        if tokens > limit:
            raise APIError(400, f"{param}: the prompt has {tokens} tokens; at most {limit} are accepted",
                           param=param, code="context_length_exceeded")
        return tokens

    async def _generate(self, prompts: list[str], body: p.SamplingRequest) -> list:
        """``n`` completions per prompt (seeds counting up from the request's), each row batched on its own."""
        rows = [Row(prompt, None if body.seed is None else body.seed + k, body.max_tokens, body.temperature,
                    body.top_p) for k, prompt in enumerate(x for x in prompts for _ in range(body.n))]
        completions = await asyncio.gather(*(self.generate_batched(row) for row in rows))
        failed = next((c for c in completions if c.finish_reason == "error"), None)
        if failed is not None:
            raise APIError(500, f"generation failed: {failed.error}", type="server_error", code="generation_failed")
        return completions

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def generate_batched(self, rows: list[Row]) -> list:
        self.batches["batches"] += 1
        self.batches["rows"] += len(rows)
        self.batches["largest"] = max(self.batches["largest"], len(rows))
        return await asyncio.to_thread(generate_rows, self.engine, rows)

    # ------------------------------------------------------------------ routes

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "model": self.model_id, "batching": dict(self.batches)}

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self._authorise(request)
        return {"object": "list", "data": [self._card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(self, model_id: str, request: Request) -> dict:
        self._authorise(request)
        if model_id != self.model_id:
            raise APIError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return self._card()

    def _card(self) -> dict:
        """A ``/v1/models`` entry; ``root`` is what the id serves: the model reference (and adapter)."""
        root = self.config.model + (f" + {self.config.adapter}" if self.config.adapter else "")
        return Model(id=self.model_id, created=self.created, object="model", owned_by="longcot",
                     root=root).model_dump(exclude_unset=True)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        body: p.ChatCompletionRequest = await self._admit(request, p.ChatCompletionRequest)
        try:
            prompt = render_chat(self.engine.tokenizer, [m.for_template() for m in body.messages],
                                 default_system=self.default_system, add_generation_prompt=body.add_generation_prompt,
                                 continue_final_message=body.continue_final_message)
        except Exception as exc:  # a chat template refusing a conversation raises its own error types
            raise APIError(400, f"messages: the chat template cannot render them: {exc}", param="messages") from None
        prompt_tokens = self._check_prompt(prompt, "messages")
        split = (body.reasoning_format or self.config.reasoning) == "split"
        return await self._answer(body, [prompt], prompt_tokens, p.ChatAnswer(self.model_id, split, opened_marker(prompt)))

    @app.post("/v1/completions")
    async def completions(self, request: Request):
        body: p.CompletionRequest = await self._admit(request, p.CompletionRequest)
        if len(body.prompt) > self.limits.max_prompts:
            raise APIError(400, f"prompt: at most {self.limits.max_prompts} prompts per request", param="prompt")
        if body.stream and len(body.prompt) > 1:
            raise APIError(400, "prompt: streaming supports one prompt per request", param="prompt")
        prompt_tokens = sum(self._check_prompt(x, "prompt") for x in body.prompt)
        return await self._answer(body, body.prompt, prompt_tokens, p.TextAnswer(self.model_id))

    async def _answer(self, body: p.SamplingRequest, prompts: list[str], prompt_tokens: int, answer: p.TextAnswer):
        """The response to a chat or text completion request, in ``answer``'s words: whole, or a stream."""
        if body.stream:
            return StreamingResponse(self._stream(body, prompts[0], prompt_tokens, answer), media_type="text/event-stream")
        completions = await self._generate(prompts, body)
        choices = []
        for index, completion in enumerate(completions):
            text, stopped = cut_at_stop(completion.text, body.stop)
            choices.append(answer.choice(index, text, "stop" if stopped else completion.finish_reason))
        usage = p.usage(prompt_tokens, sum(c.output_tokens for c in completions))
        return answer.response(choices, usage).model_dump(exclude_unset=True)  # what was set, nulls included: see protocol

    # ------------------------------------------------------------------ streaming

    async def _stream(self, body: p.SamplingRequest, prompt: str, prompt_tokens: int,
                      answer: p.TextAnswer) -> AsyncIterator[str]:
        """Server-sent events of one completion, stop sequences applied, ending with ``data: [DONE]``.

        However the stream ends (done, a stop sequence, or the client gone: the generator is closed), the
        model stops generating at its next step, so an abandoned stream never holds up the next request."""
        stops, cancel, finished = StopScanner(body.stop), threading.Event(), {}
        pieces = self.engine.stream(prompt, max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                                    seed=body.seed, on_finish=lambda c: finished.update(done=c), cancel=cancel)
        try:
            for chunk in answer.opening():
                yield _sse(chunk)
            async for piece in iterate_in_threadpool(pieces):
                for chunk in answer.feed(stops.feed(piece)):
                    yield _sse(chunk)
                if stops.stopped:
                    break
            for chunk in answer.feed(stops.close()) + answer.close():
                yield _sse(chunk)
        except Exception as exc:  # headers are gone: report in-band, as OpenAI-compatible servers do
            log.exception("streamed generation failed")
            yield _sse(json.dumps(p.openai_error(f"generation failed: {exc}", type="server_error")))
            yield _sse("[DONE]")
            return
        finally:
            cancel.set()
        done = finished.get("done")
        yield _sse(answer.chunk("stop" if stops.stopped or done is None else done.finish_reason))
        if body.stream_options and body.stream_options.include_usage:
            yield _sse(answer.chunk(usage=p.usage(prompt_tokens, done.output_tokens if done else 0)))
        yield _sse("[DONE]")


def build_app(args: dict):
    """Serve application builder: ``args`` are ``ServeConfig`` fields (``import_path`` of ``serve deploy``).

    The API key is read here, from the environment variable ``api_key_env`` names, and only its digest
    is handed to the replicas.
    """
    config = ServeConfig.model_validate(args)
    digest = api_key_digest(config.api_key_env)
    return OpenAIServer.options(**config.replica_options()).bind(config.model_dump(mode="json"), digest)
