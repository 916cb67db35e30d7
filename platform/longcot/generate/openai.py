"""The ``openai`` backend's engine: any OpenAI-compatible chat completions endpoint, through the ``openai`` SDK.

DeepSeek's API, OpenAI's, a vLLM server, or longcot's own Serve endpoint. The SDK speaks the protocol
(request building, auth, connection pooling, timeouts, typed responses and errors); this module adds what a
long generation job needs on top of it:

- a shared budget: requests start at most ``qps`` per second (and, optionally, ``tpm`` tokens per minute)
  across all the threads of one process, retries included, at most ``max_in_flight`` at a time;
- retries of a 429, a 5xx, a timeout or a dropped connection: the SDK's own retry loop, told this module's
  policy (``PacedSDK``): a wait of what the server's ``Retry-After`` (or ``retry-after-ms``, as the SDK reads
  them) asks, else a jittered doubling from ``backoff_s``; a Retry-After over ``max_backoff_s`` ends the
  request instead;
- one ``Completion`` per prompt whatever happens: a request that still fails is a ``Completion`` with
  ``finish_reason="error"``, the reason and the attempts made, never an exception, so the job goes on;
- optionally, a ``ResponseCache``: every answer is appended to disk as it arrives, so a run killed before
  its batch was committed does not pay for the same answers again when it is resumed.

Kept here because the SDK has neither: a requests- (and tokens-) per-second limit shared by threads and
charged per attempt, and an on-disk cache of answers.

The API key is read from an environment variable by the caller and held in a ``pydantic.SecretStr``, whose
``repr`` hides it: it goes to the SDK and is written nowhere (nor into the cache).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import openai
from pydantic import SecretStr

from longcot.generate.backend import Completion, Engine, Sampling
from longcot.generate.config import OpenAISettings
from longcot.generate.prompting import with_thought
from longcot.records import stable_hash

RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
CHARS_PER_TOKEN = 4  # the rough rule OpenAI itself uses to count a prompt against a token limit
CACHED = ("text", "prompt_tokens", "output_tokens", "finish_reason")  # a ResponseCache line: these and its key


class RateLimiter:
    """Let through at most ``rate`` units per second, evenly spaced, across the threads of one process.

    ``acquire(cost)`` blocks until ``cost`` units may start: one unit per request for a requests-per-second
    limit, a request's tokens for a tokens-per-minute one (``rate = tpm / 60``). Spacing rather than a
    bucket: no burst after an idle spell, so a provider's window never sees more than the rate.
    """

    def __init__(self, rate: float):
        self.rate = rate  # positive: OpenAISettings validates qps and tpm
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, cost: float = 1.0) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + cost / self.rate
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def messages_of(prompt: str) -> list[dict]:
    """Chat messages from a record's ``prompt``: a JSON list of messages, else one user message."""
    value = None
    with contextlib.suppress(json.JSONDecodeError, TypeError):
        value = json.loads(prompt)
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        return value
    return [{"role": "user", "content": prompt}]


def retry_delay(attempt: int, backoff_s: float, max_backoff_s: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    The server's ``retry_after`` when it gave one, never shortened (waiting less only earns another 429);
    else ``backoff_s`` doubled per attempt, capped at ``max_backoff_s``, with jitter (half to all of it) so
    the threads that failed together do not come back together.
    """
    if retry_after is not None:
        return retry_after
    base = min(max_backoff_s, backoff_s * (2 ** (attempt - 1)))
    return base * (0.5 + random.random() / 2)


def estimated_tokens(messages: list[dict], max_tokens: int) -> int:
    """What one request counts against a tokens-per-minute limit when it starts: its prompt (characters / 4)
    plus ``max_tokens``. OpenAI admits a request on such an estimate, before any output exists, so this is
    what has to fit in the budget (the sum, to stay under either reading of its rule)."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # content parts: count the text ones
            chars += sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
    return math.ceil(chars / CHARS_PER_TOKEN) + int(max_tokens)


def request_key(model: str, body: Mapping[str, Any]) -> str:
    """The identity of a request in the ``ResponseCache``: the served model and everything that decides the
    answer's text (messages, sampling, seed, extra fields, the thought markers it is assembled with). Not
    the URL: a mirror of the same model may finish a run."""
    return stable_hash("chat.completions", model, dict(body), length=32)


def should_retry(response: Any) -> bool:
    """The SDK's rule: the server's ``x-should-retry`` header when it says, else a 408, 409, 429 or 5xx. (The
    SDK's own ``_should_retry`` also refuses any Retry-After over 120 s; here ``max_backoff_s`` decides.)"""
    should = response.headers.get("x-should-retry")
    return should == "true" if should in ("true", "false") else response.status_code in RETRY_STATUS


def failure_of(exc: Exception) -> tuple[str, bool]:
    """Why a request failed, and whether another attempt could have helped (a 400 or a 401 cannot)."""
    if isinstance(exc, openai.APITimeoutError):
        return f"timed out: {type(exc.__cause__ or exc).__name__}", True
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return f"connection failed: {type(cause).__name__}: {cause}", True
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {_error_text(exc)}", should_retry(exc.response)
    if isinstance(exc, (openai.APIResponseValidationError, ValueError, TypeError, AttributeError)):
        # a body that is not JSON, or not a chat completion (``completion_of``)
        return f"unreadable response: {type(exc).__name__}: {exc}", False
    return f"{type(exc).__name__}: {exc}", False


def reasoning_of(message: Any) -> str | None:
    """The thought beside an answer (a message or a stream delta): ``reasoning_content`` (DeepSeek's API, longcot's
    endpoint) or ``reasoning`` (vLLM's reasoning parsers since 0.10), which the SDK's models keep as extra fields."""
    return getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)


def completion_of(response: Any, markers: str, *, seconds: float, attempts: int) -> Completion:
    """A ``ChatCompletion`` as a ``Completion``: the first choice's text, with its thought (``reasoning_of``: what
    reasoning APIs such as DeepSeek's return beside the answer) put back in front of the answer between the
    thought markers, so the record holds the whole trace.

    Raises ``ValueError`` for a response without a choice."""
    if isinstance(response, str):  # the SDK hands back a body it could not read as JSON as text
        raise ValueError(f"not a chat completion: {response[:100]!r}")
    if not getattr(response, "choices", None):
        raise ValueError("no choices in the response")
    choice = response.choices[0]
    text = getattr(choice.message, "content", None) or ""
    reasoning = reasoning_of(choice.message)
    if reasoning:
        text = with_thought(str(reasoning), text, markers)
    usage = response.usage
    return Completion(
        text=text,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        finish_reason="length" if choice.finish_reason == "length" else "stop",
        seconds=seconds,
        attempts=attempts,
    )


class ResponseCache:
    """Answers already received, on disk, so that a resumed run does not send their requests again.

    Layout: ``directory/*.jsonl``, one file per writing process (so the actors of a pool, and the runs
    before a kill, never interleave inside one file), one line per answer: its ``request_key`` and the
    ``Completion`` fields. A line is written and flushed as soon as its answer arrives, so it survives a
    kill of the driver, and of the process itself once it is flushed; a half-written last line (the process
    killed inside ``write``) is skipped when read. Only answers are kept (``stop`` or ``length``): a request
    that failed is sent again. The index (key -> file and offset) is read once, when the cache is opened;
    answers are read from disk on a hit, so a cache of long traces does not sit in every worker's memory.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, tuple[Path, int]] = {}
        for path in sorted(self.directory.glob("*.jsonl")):
            self._index.update(_index_of(path))
        self._path = self.directory / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._handle = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> Completion | None:
        where = self._index.get(key)
        if where is None:
            return None
        path, offset = where
        with path.open("rb") as handle:
            handle.seek(offset)
            entry = json.loads(handle.readline())
        return Completion(**{name: entry[name] for name in CACHED}, seconds=0.0, attempts=0)

    def put(self, key: str, completion: Completion) -> None:
        if completion.finish_reason == "error":
            return
        entry = {"key": key, **{name: getattr(completion, name) for name in CACHED}}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            if self._handle is None:
                self._handle = self._path.open("ab")
            offset = self._handle.tell()
            self._handle.write(line.encode("utf-8"))
            self._handle.flush()
            self._index[key] = (self._path, offset)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def _index_of(path: Path) -> dict[str, tuple[Path, int]]:
    index = {}
    offset = 0
    with path.open("rb") as handle:
        for raw in handle:
            if raw.endswith(b"\n"):  # not a half-written last line
                with contextlib.suppress(ValueError, KeyError, TypeError):  # a line that is no entry: sent again
                    index[json.loads(raw)["key"]] = (path, offset)
            offset += len(raw)
    return index


class PacedSDK(openai.OpenAI):
    """The SDK's client with this module's policy put into its own retry loop, through the hooks it calls:
    every attempt first waits for its turn at the rate limits and is counted (``_prepare_request`` runs once
    per attempt); a retry waits ``retry_delay``; a Retry-After over ``max_backoff_s`` ends the request."""

    def __init__(self, settings: OpenAISettings, workers: int, api_key: str):
        super().__init__(base_url=settings.base_url.rstrip("/"), api_key=api_key, max_retries=settings.max_retries,
                         timeout=settings.timeout_s)
        self.backoff_s, self.max_backoff_s = settings.backoff_s, settings.max_backoff_s
        self.request_rate = RateLimiter(settings.qps / workers)
        self.token_rate = RateLimiter(settings.tpm / workers / 60.0) if settings.tpm else None
        self.sending = threading.local()  # the request this thread is sending: its attempts, its token cost

    def _prepare_request(self, request: Any) -> None:
        self.sending.attempts += 1
        self.request_rate.acquire()
        if self.token_rate is not None:
            self.token_rate.acquire(self.sending.cost)

    def retry_after(self, headers: Mapping[str, str] | None) -> float | None:
        """Seconds the server asks to wait before the next attempt (None: it does not say), as the SDK reads
        ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), but never negative (a date gone by)."""
        wait = self._parse_retry_after_header(headers)
        return None if wait is None else max(0.0, wait)

    def _should_retry(self, response: Any) -> bool:
        wait = self.retry_after(response.headers)
        return should_retry(response) and (wait is None or wait <= self.max_backoff_s)

    def _calculate_retry_timeout(self, remaining_retries: int, options: Any, response_headers: Any = None) -> float:
        attempt = options.get_max_retries(self.max_retries) - remaining_retries + 1
        return retry_delay(attempt, self.backoff_s, self.max_backoff_s, self.retry_after(response_headers))


class OpenAIClient(Engine):
    """Chat completions for many prompts concurrently; one ``Completion`` per prompt, in order.

    Limits (``OpenAISettings``) are per client (per worker process): ``qps`` requests started per second, every
    attempt counted; ``tpm`` tokens per minute (``estimated_tokens`` charged when a request starts), for providers
    that limit tokens as well as requests, such as OpenAI, where a reasoning model's long ``max_tokens`` makes the
    token limit the one that binds; ``max_in_flight`` requests at once, a request waiting to retry included (one
    thread pool, shared by concurrent ``generate`` calls). DeepSeek limits concurrent requests per account
    instead: that is ``max_in_flight``.
    A ``Completion`` answered from ``response_cache`` has ``attempts == 0`` (nothing was sent).
    """

    def __init__(self, settings: OpenAISettings, model: str, *, api_key: SecretStr | None = None, workers: int = 1,
                 markers: str = "think"):
        """``settings``' rate limits are shared out evenly among the ``workers`` clients of a pool; ``model`` is
        the stage's, sent unless ``settings.served_model`` names another."""
        self.model = settings.served_model or model
        self.extra_body = dict(settings.extra_body)
        self.markers = markers
        self.cache = ResponseCache(settings.response_cache) if settings.response_cache else None
        # The SDK insists on a key; an endpoint without auth gets none: the header is omitted per request.
        key = api_key.get_secret_value() if api_key is not None else ""
        self._headers = {} if key else {"Authorization": openai.Omit()}
        self._sdk = PacedSDK(settings, workers, key or "no-key")
        self._pool = ThreadPoolExecutor(max_workers=settings.max_in_flight, thread_name_prefix="openai-request")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._sdk.close()
        if self.cache is not None:
            self.cache.close()

    def complete(self, prompts: list[str], sampling: Sampling, seeds: list[int | None]) -> list[Completion]:
        bodies = [
            {"messages": messages_of(p), "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
             "top_p": sampling.top_p, **({"seed": s} if s is not None else {})}
            for p, s in zip(prompts, seeds)
        ]
        return list(self._pool.map(self.request, bodies))

    def request(self, body: dict) -> Completion:
        """One chat completion for ``body`` (messages and sampling), retried as the SDK is told; never raises."""
        started = time.perf_counter()
        if self.cache is not None:
            key = request_key(self.model, {**self.extra_body, **body, "markers": self.markers})
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        state = self._sdk.sending
        state.attempts = 0
        state.cost = estimated_tokens(body["messages"], body["max_tokens"]) if self._sdk.token_rate else 0
        try:
            response = self._sdk.chat.completions.create(
                model=self.model, **body, extra_body=self.extra_body or None, extra_headers=self._headers,
            )
            completion = completion_of(response, self.markers, seconds=time.perf_counter() - started,
                                       attempts=state.attempts)
        except Exception as exc:  # every failure becomes a record; the job goes on
            return Completion.failed(self.failure(exc, state.attempts), seconds=time.perf_counter() - started,
                                     attempts=state.attempts)
        if self.cache is not None:
            self.cache.put(key, completion)
        return completion

    def failure(self, exc: Exception, attempts: int) -> str:
        """Why the request failed after ``attempts``: ``failure_of``, and why it was not retried again."""
        reason, retryable = failure_of(exc)
        wait = self._sdk.retry_after(exc.response.headers) if isinstance(exc, openai.APIStatusError) else None
        longest = self._sdk.max_backoff_s
        if retryable and attempts > self._sdk.max_retries:
            return f"{reason} (gave up after {attempts} attempts)"
        if retryable and wait is not None and wait > longest:
            return f"{reason} (the server asks to wait {wait:.0f}s, more than max_backoff_s={longest:g})"
        return reason


def _error_text(exc: openai.APIStatusError) -> str:
    """The server's own message (the SDK's ``body`` is the ``error`` object of OpenAI's ``{"error": {"message":
    ...}}`` shape, or a bare string), else the start of the body."""
    body = exc.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    return str(body or exc.response.text)[:300]
