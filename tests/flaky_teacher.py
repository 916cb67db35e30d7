"""A local OpenAI-compatible teacher that behaves like a remote reasoning API on a bad day, and keeps a log.

``FlakyTeacher`` is a real HTTP server (``http.server``, one thread per connection, so a test can close a
socket half way through a response). Each arrival of a request meets one fate, drawn from a
``Weather``: answered after a long-tailed latency, with ``reasoning_content`` beside the answer (as
DeepSeek's reasoner returns it); a 429 with ``Retry-After`` (or ``retry-after-ms``); a 5xx; or a dropped
connection (headers and half the body, then the socket is shut). The fate is a function of the request and
of how many times it arrived before, so a run is reproducible and a retry gets a fresh draw.

Every arrival is logged as an ``Event``; the pure functions below read the log: throughput, Retry-After
compliance (the gap between a 429 and the next arrival of the same request), requests answered twice,
and what a resumed run sent again. A request is identified by ``request_key`` (its messages and seed),
which the caller can compute from a generated record too (``key_of_record``).

Also here: the helpers the slow test and ``bench/bench_openai_teacher.py`` share to drive ``longcot
generate`` in a subprocess against it and kill it part way.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Weather:
    """How the teacher behaves. Rates are per arrival; latencies are log-normal with a far tail."""

    latency_median_s: float = 0.8
    latency_sigma: float = 0.7  # log-normal spread: p99 about median * e^(2.33 sigma)
    slow_rate: float = 0.02  # share of answers from the far tail (a long reasoning chain)
    slow_s: tuple[float, float] = (5.0, 12.0)
    rate_limited: float = 0.03  # 429 with a Retry-After
    retry_after_s: tuple[float, ...] = (1.0, 2.0)
    retry_after_ms_share: float = 0.3  # of the 429s, those that say retry-after-ms (OpenAI's header) instead
    server_errors: float = 0.02  # 500 / 502 / 503
    dropped: float = 0.01  # connection shut half way through the answer
    length_rate: float = 0.05  # answers that stop at max_tokens
    reasoning_words: int = 80
    seed: int = 0


@dataclass(frozen=True)
class Event:
    """One arrival of a request and what the teacher did with it (``monotonic`` seconds). ``replied`` is when
    the reply was written; for a 429, just before it was, so a Retry-After check never credits the client
    with the teacher's own delays."""

    key: str
    arrived: float
    replied: float
    outcome: str  # answered | rate_limited | server_error | dropped | unwritten (client gone) | refused
    status: int
    retry_after: float | None = None


def request_key(messages: list[dict], seed: int | None) -> str:
    """A request's identity: its messages and seed (the same sample sends the same ones on every attempt)."""
    blob = json.dumps([messages, seed], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def key_of_record(record: dict, base_seed: int = 0) -> str:
    """The ``request_key`` a generated record was (or will be) requested with."""
    from longcot.generate.openai import messages_of
    from longcot.generate.samples import sample_seed

    return request_key(messages_of(record["prompt"]), sample_seed(base_seed, record["id"]))


def fate(weather: Weather, key: str, arrival: int) -> tuple[str, random.Random]:
    """The outcome of the ``arrival``-th (0-based) arrival of request ``key``, and the generator that drew
    it (which then draws the latency, so the whole reply is a function of the request and its arrival)."""
    digest = hashlib.sha256(f"{weather.seed}:{key}:{arrival}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    u = rng.random()
    for outcome, share in (("rate_limited", weather.rate_limited), ("server_error", weather.server_errors),
                           ("dropped", weather.dropped)):
        if u < share:
            return outcome, rng
        u -= share
    return "answered", rng


def latency(weather: Weather, rng: random.Random) -> float:
    if rng.random() < weather.slow_rate:
        return rng.uniform(*weather.slow_s)
    return weather.latency_median_s * math.exp(weather.latency_sigma * rng.gauss(0.0, 1.0))


def answer_body(model: str, key: str, rng: random.Random, weather: Weather, max_tokens: int) -> dict:
    """A ``chat.completion`` as a reasoning API returns it: ``reasoning_content`` beside the answer."""
    value = int(key[:6], 16) % 1000
    words = [f"step{i}" for i in range(weather.reasoning_words)]
    length = rng.random() < weather.length_rate
    completion_tokens = max_tokens if length else weather.reasoning_words + 6
    return {
        "id": f"chatcmpl-{key[:12]}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "length" if length else "stop", "message": {
            "role": "assistant", "content": "" if length else f"The answer is \\boxed{{{value}}}.",
            "reasoning_content": "Let me think. " + " ".join(words)}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": completion_tokens,
                  "total_tokens": 40 + completion_tokens},
    }


class FlakyTeacher:
    """The server; use as a context manager. ``url`` is the ``base_url`` to give a client."""

    def __init__(self, weather: Weather = Weather(), *, api_key: str | None = None):
        self.weather = weather
        self.api_key = api_key
        self._events: list[Event] = []
        self._arrivals: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def __enter__(self) -> "FlakyTeacher":
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        threading.Thread(target=self._server.serve_forever, name="flaky-teacher", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _arrive(self, key: str) -> int:
        with self._lock:
            n = self._arrivals.get(key, 0)
            self._arrivals[key] = n + 1
            return n

    def _log(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # a pool opening its connections at once must not meet a full listen backlog

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is part of the weather
            super().handle_error(request, client_address)


def _handler_for(teacher: FlakyTeacher) -> type[BaseHTTPRequestHandler]:
    weather = teacher.weather

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real API

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            arrived = time.monotonic()
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            key = request_key(body.get("messages") or [], body.get("seed"))
            if not self.path.endswith("/chat/completions") or (
                    teacher.api_key and self.headers.get("authorization") != f"Bearer {teacher.api_key}"):
                self._reply(401, {"error": {"message": "unknown route or key"}})
                teacher._log(Event(key, arrived, time.monotonic(), "refused", 401))
                return
            outcome, rng = fate(weather, key, teacher._arrive(key))
            if outcome == "rate_limited":
                wait = rng.choice(weather.retry_after_s)
                header = ({"retry-after-ms": str(int(wait * 1000))} if rng.random() < weather.retry_after_ms_share
                          else {"Retry-After": f"{wait:g}"})
                time.sleep(0.01)
                replied = time.monotonic()  # before the write: the client cannot start waiting any earlier
                self._reply(429, {"error": {"message": "rate limit reached"}}, header)
                teacher._log(Event(key, arrived, replied, outcome, 429, wait))
                return
            if outcome == "server_error":
                time.sleep(latency(weather, rng) * 0.3)
                status = rng.choice((500, 502, 503))
                self._reply(status, {"error": {"message": "the teacher is overloaded"}})
                teacher._log(Event(key, arrived, time.monotonic(), outcome, status))
                return
            time.sleep(latency(weather, rng))
            data = json.dumps(answer_body(body.get("model", "teacher"), key, rng, weather,
                                          int(body.get("max_tokens") or 16))).encode()
            if outcome == "dropped":
                self._drop(data)
                teacher._log(Event(key, arrived, time.monotonic(), outcome, 200))
                return
            written = self._send(200, data)
            teacher._log(Event(key, arrived, time.monotonic(), "answered" if written else "unwritten", 200))

        def _reply(self, status: int, payload: dict, headers: dict | None = None) -> bool:
            return self._send(status, json.dumps(payload).encode(), headers)

        def _send(self, status: int, data: bytes, headers: dict | None = None) -> bool:
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                return True
            except OSError:  # the client hung up (timed out, or its process was killed)
                self.close_connection = True
                return False

        def _drop(self, data: bytes) -> None:
            """Headers promising the whole body, half of it, then the connection shut."""
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True

    return Handler


# --- reading the log --------------------------------------------------------------------------------


def retry_after_margins(events: Iterable[Event]) -> list[float]:
    """For each 429 that was followed by another arrival of the same request: the gap between the 429's
    reply and that arrival, less the Retry-After it asked for. Negative means the client came back early."""
    by_key: dict[str, list[Event]] = {}
    for event in events:
        by_key.setdefault(event.key, []).append(event)
    margins = []
    for arrivals in by_key.values():
        arrivals.sort(key=lambda e: e.arrived)
        for this, following in zip(arrivals, arrivals[1:]):
            if this.outcome == "rate_limited" and this.retry_after is not None:
                margins.append(following.arrived - this.replied - this.retry_after)
    return margins


def peak_per_second(times: Iterable[float]) -> int:
    """The most arrivals in any one-second window."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def tally(events: list[Event]) -> dict:
    """What the teacher saw: counts by outcome, requests answered more than once, the rates over the
    active window (first arrival to last reply), the peak second, and Retry-After compliance."""
    counts: dict[str, int] = {}
    answered: dict[str, int] = {}
    for event in events:
        counts[event.outcome] = counts.get(event.outcome, 0) + 1
        if event.outcome == "answered":
            answered[event.key] = answered.get(event.key, 0) + 1
    window = (max(e.replied for e in events) - min(e.arrived for e in events)) if events else 0.0
    margins = retry_after_margins(events)
    return {
        "arrivals": len(events),
        **{name: counts.get(name, 0) for name in ("answered", "rate_limited", "server_error", "dropped",
                                                   "unwritten", "refused")},
        "keys_answered": len(answered),
        "keys_answered_twice": sum(1 for n in answered.values() if n > 1),
        "window_s": window,
        "arrivals_per_s": len(events) / window if window else 0.0,
        "answers_per_s": counts.get("answered", 0) / window if window else 0.0,
        "peak_1s": peak_per_second(e.arrived for e in events),
        "retry_after_checked": len(margins),
        "retry_after_early": sum(1 for m in margins if m < 0),
        "retry_after_min_margin_s": min(margins) if margins else None,
    }


def resent_after_resume(before: list[Event], after: list[Event], committed: set[str]) -> dict:
    """What a resumed run sent again. ``before``/``after``: the log split where the resumed run started
    (``split_at``); ``committed``: the keys of the records in the output once the killed run was gone.

    - ``committed_resent``: requests of records already written, sent again (the stage's resume must skip them);
    - ``answered_uncommitted``: requests answered before the kill whose records were not written yet;
    - ``answered_resent``: of those, the ones sent again (a paid-for answer asked for twice)."""
    sent_after = {e.key for e in after}
    answered_before = {e.key for e in before if e.outcome == "answered"}
    uncommitted = answered_before - committed
    return {
        "committed": len(committed),
        "committed_resent": len(committed & sent_after),
        "answered_uncommitted": len(uncommitted),
        "answered_resent": len(uncommitted & sent_after),
    }


# --- driving `longcot generate` in a subprocess ------------------------------------------------------


def write_problems(path: Path, count: int) -> Path:
    """``count`` distinct arithmetic problems as problem records (JSONL)."""
    rng = random.Random(count)
    with path.open("w") as handle:
        for i in range(count):
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            handle.write(json.dumps({"problem": f"Problem {i:05d}: what is {a} + {b}?", "problem_id": f"p{i:05d}",
                                     "source": "flaky-teacher", "reference_answer": str(a + b)}) + "\n")
    return path


def generate_argv(problems: Path, output: Path, runs_dir: Path, base_url: str, settings: dict) -> list[str]:
    """``longcot generate`` against ``base_url`` with ``settings`` as ``--set key=value`` (nested dicts
    flattened to dotted keys), no progress bar."""
    argv = ["generate", "--input", str(problems), "--output", str(output), "--backend", "openai",
            "--base-url", base_url, "--runs-dir", str(runs_dir), "--no-progress"]
    for key, value in _flatten(settings):
        argv += ["--set", f"{key}={json.dumps(value)}"]
    return argv


def _flatten(settings: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


@dataclass
class Run:
    """One ``longcot generate`` process: how it ended and how long it ran."""

    returncode: int
    killed_at: float | None  # ``time.monotonic()`` of the SIGKILL, None when it ran to its end
    seconds: float
    stderr: str = field(repr=False, default="")

    @property
    def killed(self) -> bool:
        return self.killed_at is not None


def run_generate(argv: list[str], *, ray_address: str, kill_when: Callable[[], bool] | None = None,
                 driver: list[str] | None = None, timeout_s: float = 600.0) -> Run:
    """Run ``longcot generate ARGV`` as a user does, its driver attached to the Ray instance at
    ``ray_address``; SIGKILL it as soon as ``kill_when()`` holds. ``driver`` replaces the command that is
    given ARGV (default ``python -m longcot``)."""
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    command = (driver or [sys.executable, "-m", "longcot"]) + argv
    started = time.monotonic()
    with open(os.devnull, "w") as devnull, subprocess.Popen(
            command, cwd=REPO, env=env, stdout=devnull, stderr=subprocess.PIPE, text=True) as proc:
        stderr_lines: list[str] = []
        reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
        reader.start()
        killed_at = None
        while proc.poll() is None:
            if time.monotonic() - started > timeout_s:
                proc.kill()
                raise TimeoutError(f"longcot generate ran over {timeout_s}s:\n{''.join(stderr_lines)[-3000:]}")
            if kill_when is not None and killed_at is None and kill_when():
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = time.monotonic()
            time.sleep(0.05)
        reader.join(timeout=5)
    return Run(proc.returncode, killed_at, time.monotonic() - started, "".join(stderr_lines))


def wait_for_workers_gone(limit_s: float = 120.0) -> None:
    """Wait until this Ray instance has no live Ray Data worker actor: once a driver is killed, Ray tears
    its actors down, and a resumed run must not overlap with the last requests of the killed one.

    Reads the actor table through ``ray._private.state``: the public state API needs the dashboard, which
    the test and bench instances run without."""
    import ray

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        workers = [a for a in ray._private.state.actors().values() if a["ActorClassName"].startswith("MapWorker(")]
        if all(a["State"] == "DEAD" for a in workers):
            return
        time.sleep(0.25)
    raise TimeoutError(f"Ray Data workers still alive {limit_s}s after their driver was killed")


def split_at(events: list[Event], moment: float) -> tuple[list[Event], list[Event]]:
    """The events that arrived before ``moment`` and those that arrived after it (the log is in the order
    of replies, so a slow reply to a killed worker can be logged after a resumed run began)."""
    return [e for e in events if e.arrived < moment], [e for e in events if e.arrived >= moment]
