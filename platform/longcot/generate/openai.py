"""The ``openai`` backend's engine: any OpenAI-compatible chat completions endpoint over HTTP.

DeepSeek's API, a vLLM server, or longcot's own Serve endpoint. Requests are started at most ``qps``
per second and ``max_in_flight`` at a time; a 429, a 5xx, a timeout or a dropped connection is retried
with exponential backoff (jittered, or ``Retry-After`` when the server sends one). A request that still
fails becomes a ``Completion`` with ``finish_reason="error"`` and the reason, never an exception, so
the job goes on. The API key is read from an environment variable by the caller and held in a
``Secret``, whose ``repr`` hides it: it is sent in the ``Authorization`` header and written nowhere.
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from longcot.generate.backend import Completion

RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class Secret:
    """A value that never shows up in a repr, a log line or a traceback's locals."""

    def __init__(self, value: str | None):
        self._value = value

    def get(self) -> str | None:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret(****)" if self._value else "Secret(None)"

    __str__ = __repr__


class RateLimiter:
    """Start at most ``qps`` requests per second (evenly spaced), across the threads of one process."""

    def __init__(self, qps: float):
        self.interval = 1.0 / qps
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def messages_of(prompt: str) -> list[dict]:
    """Chat messages from a record's ``prompt``: a JSON list of messages, else one user message."""
    try:
        value = json.loads(prompt)
    except (json.JSONDecodeError, TypeError):
        value = None
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        return value
    return [{"role": "user", "content": prompt}]


def retry_delay(attempt: int, backoff_s: float, max_backoff_s: float, retry_after: str | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): ``Retry-After`` if given, else jittered doubling."""
    if retry_after:
        try:
            return min(max_backoff_s, max(0.0, float(retry_after)))
        except ValueError:
            pass
    base = min(max_backoff_s, backoff_s * (2 ** (attempt - 1)))
    return base * (0.5 + random.random() / 2)


class OpenAIClient:
    """Chat completions for many prompts concurrently; one ``Completion`` per prompt, in order.

    ``reasoning_content`` (what reasoning APIs such as DeepSeek's return beside the answer) is put back
    in front of the answer between the configured thought markers, so the record holds the whole trace.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: Secret | None = None,
        qps: float = 4.0,
        max_in_flight: int = 8,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 600.0,
        extra_body: dict[str, Any] | None = None,
        markers: str = "think",
    ):
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.extra_body = dict(extra_body or {})
        self.markers = markers
        self.limiter = RateLimiter(qps)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key.get()}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
        )

    def close(self) -> None:
        self._client.close()

    def generate(
        self,
        prompts: list[str],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | Sequence[int] | None = None,
    ) -> list[Completion]:
        seeds = [seed] * len(prompts) if seed is None or isinstance(seed, int) else list(seed)
        bodies = [
            {
                **self.extra_body,
                "model": self.model,
                "messages": messages_of(p),
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
                **({"seed": s} if s is not None else {}),
            }
            for p, s in zip(prompts, seeds)
        ]
        if len(bodies) == 1:
            return [self.request(bodies[0])]
        with ThreadPoolExecutor(max_workers=min(self.max_in_flight, len(bodies))) as pool:
            return list(pool.map(self.request, bodies))

    def request(self, body: dict) -> Completion:
        """POST one chat completion, retrying what is worth retrying; never raises."""
        import httpx

        started = time.perf_counter()
        error = "no attempt made"
        for attempt in range(1, self.max_retries + 2):
            self.limiter.acquire()
            retry_after = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException as exc:
                error = f"timed out: {type(exc).__name__}"
            except httpx.TransportError as exc:
                error = f"connection failed: {type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        return self._completion(response.json(), time.perf_counter() - started, attempt)
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        return Completion.failed(
                            f"unreadable response: {type(exc).__name__}: {exc}",
                            seconds=time.perf_counter() - started, attempts=attempt,
                        )
                error = f"HTTP {response.status_code}: {_error_text(response)}"
                if response.status_code not in RETRY_STATUS:
                    return Completion.failed(error, seconds=time.perf_counter() - started, attempts=attempt)
                retry_after = response.headers.get("retry-after")
            if attempt <= self.max_retries:
                time.sleep(retry_delay(attempt, self.backoff_s, self.max_backoff_s, retry_after))
        return Completion.failed(
            f"{error} (gave up after {self.max_retries + 1} attempts)",
            seconds=time.perf_counter() - started, attempts=self.max_retries + 1,
        )

    def _completion(self, data: dict, seconds: float, attempts: int) -> Completion:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning:
            text = _with_thought(reasoning, text, self.markers)
        usage = data.get("usage") or {}
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=reason,
            error=None,
            seconds=seconds,
            attempts=attempts,
        )


def _with_thought(thought: str, answer: str, markers: str) -> str:
    from longcot.verify.parse import SKY_MARKERS, THINK_MARKERS

    if markers == "sky":
        b_t, e_t, b_s, e_s = SKY_MARKERS
        return f"{b_t}\n{thought.strip()}\n{e_t}\n\n{b_s}\n{answer.strip()}\n{e_s}"
    return f"{THINK_MARKERS[0]}\n{thought.strip()}\n{THINK_MARKERS[1]}\n\n{answer.strip()}"


def _error_text(response) -> str:
    try:
        data = response.json()
        message = (data.get("error") or {}).get("message") if isinstance(data.get("error"), dict) else data.get("error")
        return str(message or data)[:300]
    except Exception:
        return response.text[:300]
