"""The ``openai`` backend's engine: any OpenAI-compatible chat completions endpoint, through the ``openai`` SDK.

DeepSeek's API, OpenAI's, a vLLM server, or longcot's own Serve endpoint. The SDK speaks the protocol
(request building, auth, connection pooling, timeouts, typed responses and errors); this module adds what a
long generation job needs on top of it:

- a shared budget: requests start at most ``qps`` per second (and, optionally, ``tpm`` tokens per minute)
  across all the threads of one process, retries included, at most ``max_in_flight`` at a time;
- retries of a 429, a 5xx, a timeout or a dropped connection, waiting what the server's ``Retry-After``
  (or ``retry-after-ms``) asks, else a jittered doubling from ``backoff_s``;
- one ``Completion`` per prompt whatever happens: a request that still fails is a ``Completion`` with
  ``finish_reason="error"`` and the reason, never an exception, so the job goes on;
- optionally, a ``ResponseCache``: every answer is appended to disk as it arrives, so a run killed before
  its batch was committed does not pay for the same answers again when it is resumed.

Retries are this module's, not the SDK's (the client is built with ``max_retries=0``): the SDK's own
retries would bypass the rate limit (a provider counts a retried request against its limit like any
other), could not be told ``backoff_s``/``max_backoff_s``, and would hide the attempt count the record keeps.

The API key is read from an environment variable by the caller and held in a ``pydantic.SecretStr``, whose
``repr`` hides it: it goes to the SDK and is written nowhere (nor into the cache).
"""

from __future__ import annotations

import email.utils
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
from typing import Any, Mapping, NamedTuple

from pydantic import SecretStr

from longcot.generate.backend import Completion, Engine, Sampling

RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
CHARS_PER_TOKEN = 4  # the rough rule OpenAI itself uses to count a prompt against a token limit


class RateLimiter:
    """Let through at most ``rate`` units per second, evenly spaced, across the threads of one process.

    ``acquire(cost)`` blocks until ``cost`` units may start: one unit per request for a requests-per-second
    limit, a request's tokens for a tokens-per-minute one (``rate = tpm / 60``). Spacing rather than a
    bucket: no burst after an idle spell, so a provider's window never sees more than the rate.
    """

    def __init__(self, rate: float):
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = rate
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


class Failure(NamedTuple):
    """Why an attempt failed, whether another attempt may help, and how long the server asked to wait."""

    reason: str
    retryable: bool
    retry_after: float | None = None


def messages_of(prompt: str) -> list[dict]:
    """Chat messages from a record's ``prompt``: a JSON list of messages, else one user message."""
    try:
        value = json.loads(prompt)
    except (json.JSONDecodeError, TypeError):
        value = None
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        return value
    return [{"role": "user", "content": prompt}]


def retry_after_s(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds the server asks to wait before the next attempt, or None when it does not say.

    ``retry-after-ms`` (OpenAI's, more precise) wins over ``Retry-After``, which is seconds or an HTTP
    date. The SDK parses these too, but only in a private method of its retry loop, which is off here.
    """
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(value) if value else None
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))


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
    from longcot.records import stable_hash

    return stable_hash("chat.completions", model, dict(body), length=32)


def failure_of(exc: Exception) -> Failure:
    """An SDK exception as a ``Failure``: a status the SDK's own policy retries (408, 409, 429, 5xx; the
    server's ``x-should-retry`` header wins), timeouts and broken connections are retryable; anything else,
    such as a 400 or a 401, is final."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return Failure(f"timed out: {type(exc.__cause__ or exc).__name__}", True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return Failure(f"connection failed: {type(cause).__name__}: {cause}", True)
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        should = headers.get("x-should-retry")
        retryable = should == "true" if should in ("true", "false") else exc.status_code in RETRY_STATUS
        return Failure(f"HTTP {exc.status_code}: {_error_text(exc)}", retryable, retry_after_s(headers))
    if isinstance(exc, (openai.APIResponseValidationError, ValueError)):  # ValueError: a body that is not JSON
        return Failure(f"unreadable response: {type(exc).__name__}: {exc}", False)
    return Failure(f"{type(exc).__name__}: {exc}", False)


def completion_of(response: Any, markers: str, *, seconds: float, attempts: int) -> Completion:
    """A ``ChatCompletion`` as a ``Completion``: the first choice's text, with ``reasoning_content`` (what
    reasoning APIs such as DeepSeek's return beside the answer; ``reasoning`` on some servers) put back in
    front of the answer between the thought markers, so the record holds the whole trace.

    Raises ``ValueError`` for a response without a choice."""
    if isinstance(response, str):  # the SDK hands back a body it could not read as JSON as text
        raise ValueError(f"not a chat completion: {response[:100]!r}")
    if not getattr(response, "choices", None):
        raise ValueError("no choices in the response")
    choice = response.choices[0]
    message = choice.message
    text = (message.content if message else None) or ""
    extra = (message.model_extra or {}) if message else {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    if reasoning:
        text = _with_thought(str(reasoning), text, markers)
    usage = response.usage
    return Completion(
        text=text,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        finish_reason="length" if choice.finish_reason == "length" else "stop",
        error=None,
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
        return Completion(entry["text"], entry["prompt_tokens"], entry["output_tokens"], entry["finish_reason"],
                          None, 0.0, attempts=0)

    def put(self, key: str, completion: Completion) -> None:
        if completion.finish_reason == "error":
            return
        line = json.dumps({"key": key, "text": completion.text, "prompt_tokens": completion.prompt_tokens,
                           "output_tokens": completion.output_tokens, "finish_reason": completion.finish_reason},
                          ensure_ascii=False) + "\n"
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
            if raw.endswith(b"\n"):
                try:
                    index[json.loads(raw)["key"]] = (path, offset)
                except (ValueError, KeyError, TypeError):
                    pass  # a line that is not an entry: skipped, the request is sent again
            offset += len(raw)
    return index


class OpenAIClient(Engine):
    """Chat completions for many prompts concurrently; one ``Completion`` per prompt, in order.

    Limits are per client (per worker process): ``qps`` requests started per second, every attempt counted;
    ``tpm`` tokens per minute (``estimated_tokens`` charged when a request starts), for providers that limit
    tokens as well as requests, such as OpenAI, where a reasoning model's long ``max_tokens`` makes the token
    limit the one that binds; ``max_in_flight`` requests at once, a request waiting to retry included (one
    thread pool, shared by concurrent ``generate`` calls). DeepSeek limits concurrent requests per account instead: that is ``max_in_flight``.
    A ``Completion`` answered from ``response_cache`` has ``attempts == 0`` (nothing was sent).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: SecretStr | None = None,
        qps: float = 4.0,
        tpm: float | None = None,
        max_in_flight: int = 8,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 600.0,
        extra_body: dict[str, Any] | None = None,
        markers: str = "think",
        response_cache: str | Path | None = None,
    ):
        import openai

        self.model = model
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.extra_body = dict(extra_body or {})
        self.markers = markers
        self.requests = RateLimiter(qps)
        self.tokens = RateLimiter(tpm / 60.0) if tpm else None
        self.cache = ResponseCache(response_cache) if response_cache else None
        # The SDK insists on a key; an endpoint without auth gets none: the header is omitted per request.
        key = api_key.get_secret_value() if api_key is not None else ""
        self._headers = {} if key else {"Authorization": openai.Omit()}
        self._sdk = openai.OpenAI(
            base_url=base_url.rstrip("/"),
            api_key=key or "no-key",
            max_retries=0,
            timeout=timeout_s,
        )
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="openai-request")

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
        """One chat completion for ``body`` (messages and sampling), retrying what is worth retrying;
        never raises."""
        started = time.perf_counter()
        key = request_key(self.model, {**self.extra_body, **body, "markers": self.markers}) \
            if self.cache is not None else ""
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            return cached
        cost = estimated_tokens(body["messages"], body["max_tokens"]) if self.tokens else 0
        attempt = 0
        while True:
            attempt += 1
            self.requests.acquire()
            if self.tokens is not None:
                self.tokens.acquire(cost)
            try:
                response = self._sdk.chat.completions.create(
                    model=self.model, **body, extra_body=self.extra_body or None, extra_headers=self._headers,
                )
            except Exception as exc:  # every failure becomes a record; the job goes on
                failure = failure_of(exc)
            else:
                seconds = time.perf_counter() - started
                try:
                    completion = completion_of(response, self.markers, seconds=seconds, attempts=attempt)
                except (ValueError, TypeError, AttributeError) as exc:
                    return Completion.failed(f"unreadable response: {type(exc).__name__}: {exc}", seconds=seconds,
                                             attempts=attempt)
                if self.cache is not None:
                    self.cache.put(key, completion)
                return completion
            if not failure.retryable:
                return Completion.failed(failure.reason, seconds=time.perf_counter() - started, attempts=attempt)
            if attempt > self.max_retries:
                return Completion.failed(f"{failure.reason} (gave up after {attempt} attempts)",
                                         seconds=time.perf_counter() - started, attempts=attempt)
            if failure.retry_after is not None and failure.retry_after > self.max_backoff_s:
                return Completion.failed(
                    f"{failure.reason} (the server asks to wait {failure.retry_after:.0f}s, more than "
                    f"max_backoff_s={self.max_backoff_s:g})",
                    seconds=time.perf_counter() - started, attempts=attempt,
                )
            time.sleep(retry_delay(attempt, self.backoff_s, self.max_backoff_s, failure.retry_after))


def _with_thought(thought: str, answer: str, markers: str) -> str:
    from longcot.traces import SKY_MARKERS, THINK_MARKERS

    if markers == "sky":
        b_t, e_t, b_s, e_s = SKY_MARKERS
        return f"{b_t}\n{thought.strip()}\n{e_t}\n\n{b_s}\n{answer.strip()}\n{e_s}"
    return f"{THINK_MARKERS[0]}\n{thought.strip()}\n{THINK_MARKERS[1]}\n\n{answer.strip()}"


def _error_text(exc: Any) -> str:
    """The server's own message from an error response (OpenAI's ``{"error": {"message": ...}}`` shape or a
    bare string), else the start of the body."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body
        if isinstance(message, dict):
            message = message.get("message") or message
        return str(message)[:300]
    if isinstance(body, str) and body:
        return body[:300]
    try:
        return exc.response.text[:300]
    except Exception:
        return str(exc)[:300]
