"""End to end: `longcot serve` as a real subprocess (Ray + Serve + FastAPI + the embedded model with a
PEFT adapter, API key required), queried with the official openai client and raw HTTP, then stopped
with SIGTERM and checked to leave no process behind. One server start for the whole module."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

LONGCOT = str(Path(sys.executable).with_name("longcot"))
KEY_ENV = "LONGCOT_TEST_SERVE_KEY"
KEY = "sk-longcot-test-0123456789"
MODEL_ID = "longcot-student"
BASE = "embedded:smollm2-135m-instruct"
QUESTION = "Pick a number."  # the test adapter changes the base model's greedy answer from its first token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_student_adapter(path: Path) -> Path:
    """A small LoRA adapter on the embedded model: seeded, scaled so the model stays fluent but answers
    differently (what a distilled student checkpoint looks like to the server)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from longcot.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    model = get_peft_model(load_causal_lm(BASE, dtype="float32"), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.3)
    model.save_pretrained(path)
    load_tokenizer(BASE).save_pretrained(path)  # as the train stage saves it, beside the adapter
    return path


@pytest.fixture(scope="module")
def student_adapter(tmp_path_factory) -> Path:
    return make_student_adapter(tmp_path_factory.mktemp("student") / "adapter")


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM, wait: float = 120) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


# Ray gives its raylet a fixed 30 s to register; on an oversubscribed machine that can run out. Only
# that failure, before anything of ours ran, is retried (once).
RAY_START_TIMEOUT = "The current node timed out during startup"


def _start_server(adapter: Path, log: Path) -> Server:
    port = free_port()
    env = {**os.environ, KEY_ENV: KEY, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    cmd = [LONGCOT, "serve", "--model", BASE, "--adapter", str(adapter), "--port", str(port),
           "--api-key-env", KEY_ENV, "--set", "limits.max_tokens=1024", "--set", "batching.max_batch_size=8",
           "--set", "batching.batch_wait_timeout_s=0.1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    srv = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            return srv
        try:
            if httpx.get(srv.url + "/health", timeout=5).status_code == 200:
                return srv
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"longcot serve did not come up:\n{srv.log_tail()}")
        time.sleep(1)


@pytest.fixture(scope="module")
def server(student_adapter, tmp_path_factory):
    logs = tmp_path_factory.mktemp("serve-log")
    srv = _start_server(student_adapter, logs / "serve.log")
    if srv.proc.poll() is not None and RAY_START_TIMEOUT in srv.log_tail():
        srv = _start_server(student_adapter, logs / "serve-retry.log")
    try:
        if srv.proc.poll() is not None:
            pytest.fail(f"longcot serve exited with {srv.proc.returncode}:\n{srv.log_tail()}")
        yield srv
    finally:
        _stop(srv.proc)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key=KEY, timeout=300, max_retries=0)


def _post(server: Server, path: str, body, key: str | None = KEY, **kwargs) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(server.url + path, content=content, headers=headers, timeout=300, **kwargs)


def _chat(content: str = QUESTION, **extra) -> dict:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}


# ------------------------------------------------------------------------------------------ the protocol


def test_openai_client_lists_the_model_and_answers_plain_and_streamed(client):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    reply = client.chat.completions.create(**_chat(max_tokens=16))
    answer = reply.choices[0].message.content
    assert answer and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.model == MODEL_ID and reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 5
    chunks = list(client.chat.completions.create(**_chat(max_tokens=16), stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer  # greedy: the stream is the same answer, delta by delta
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_stream_is_server_sent_events_ending_with_done(server):
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=_chat(max_tokens=4, stream=True),
                      headers={"authorization": f"Bearer {KEY}"}, timeout=300) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_the_adapter_is_served(client, student_adapter):
    from longcot.generate.hf import HFGenerator
    from longcot.generate.prompting import render_prompt

    served = client.chat.completions.create(**_chat(max_tokens=6), extra_body={"reasoning_format": "raw"})
    student = HFGenerator(BASE, adapter=str(student_adapter), device="cpu")
    prompt = render_prompt(student.tokenizer, [{"role": "user", "content": QUESTION}])
    with_adapter = student.generate([prompt], max_tokens=6)[0].text
    # the base model, loaded the same way without the adapter (an adapter is merged into the weights at load)
    base = HFGenerator(BASE, device="cpu").generate([prompt], max_tokens=6)[0].text
    assert served.choices[0].message.content == with_adapter
    assert with_adapter != base


def test_text_completions_with_n_seed_and_stop(client):
    reply = client.completions.create(model=MODEL_ID, prompt=["2 + 2 =", "The sky is"], max_tokens=6, n=2,
                                      temperature=0.8, seed=11)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3] and all(c.text for c in reply.choices)
    again = client.completions.create(model=MODEL_ID, prompt=["2 + 2 =", "The sky is"], max_tokens=6, n=2,
                                      temperature=0.8, seed=11)
    assert [c.text for c in again.choices] == [c.text for c in reply.choices]  # seeded: reproducible
    full = client.completions.create(model=MODEL_ID, prompt="Count: one, two, three,", max_tokens=12, temperature=0)
    stop = full.choices[0].text.strip().split()[0]  # stop at the first word the model writes
    cut = client.completions.create(model=MODEL_ID, prompt="Count: one, two, three,", max_tokens=12,
                                    temperature=0, stop=[stop])
    assert stop not in cut.choices[0].text and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL_ID, prompt="Count: one, two, three,", max_tokens=12,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == full.choices[0].text


def test_reasoning_goes_to_reasoning_content(client):
    # The assistant turn opens a thought and the model continues it: with max_tokens this small the
    # thought never closes, so everything generated is reasoning and the answer is empty.
    body = dict(model=MODEL_ID, temperature=0, max_tokens=8,
                messages=[{"role": "user", "content": "What is 6 times 7?"}, {"role": "assistant", "content": "<think>\n"}])
    extra = {"continue_final_message": True, "add_generation_prompt": False}
    split = client.chat.completions.create(**body, extra_body=extra)
    message = split.choices[0].message
    assert message.reasoning_content and message.content == "" and split.choices[0].finish_reason == "length"
    raw = client.chat.completions.create(**body, extra_body={**extra, "reasoning_format": "raw"})
    assert raw.choices[0].message.content.strip() == message.reasoning_content
    assert getattr(raw.choices[0].message, "reasoning_content", None) is None
    chunks = client.chat.completions.create(**body, extra_body=extra, stream=True)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == message.reasoning_content
    assert "".join(d.content or "" for d in deltas) == ""


# ------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("body,status,param", [
    ('{"model": "longcot-student", "messages": [', 400, None),  # bad JSON
    ('["a", "list"]', 400, None),
    (_chat(max_tokens="ten"), 400, "max_tokens"),  # wrong type
    (_chat(max_tokens=-5), 400, "max_tokens"),
    (_chat(max_tokens=100000), 400, "max_tokens"),  # over the server's bound (1024 here)
    ('{"model": "longcot-student", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, None),
    ('{"model": "longcot-student", "messages": [{"role": "user", "content": "hi"}], "top_p": 1e999}', 400, "top_p"),
    ('{"model": "longcot-student", "messages": ' + "[" * 5000 + "]" * 5000 + "}", 400, None),  # nested too deep
    (_chat(temperature=7), 400, "temperature"),
    ({"model": MODEL_ID, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
    ({**_chat(), "max_tokns": 5}, 400, "max_tokns"),
    ({**_chat(), "model": "gpt-4o"}, 404, "model"),
    ({**_chat(), "n": 99}, 400, "n"),
    (_chat("word " * 5000), 400, "messages"),  # prompt longer than the model's context
])
def test_bad_requests_get_openai_errors(server, body, status, param):
    response = _post(server, "/v1/chat/completions", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_nan_deep_json_and_empty_prompts_are_named_in_the_error(server):
    nan = _post(server, "/v1/chat/completions", '{"model": "longcot-student", "messages": [], "temperature": NaN}')
    assert "NaN is not a JSON number" in nan.json()["error"]["message"]
    inf = _post(server, "/v1/chat/completions",
                '{"model": "longcot-student", "messages": [{"role": "user", "content": "x"}], "top_p": 1e999}')
    assert "finite number" in inf.json()["error"]["message"]
    deep = _post(server, "/v1/chat/completions", '{"a": ' + "[" * 100 + "]" * 100 + "}")
    assert deep.status_code == 400 and "nests deeper than 32 levels" in deep.json()["error"]["message"]
    for prompt in ("", "   ", ["fine", ""]):
        empty = _post(server, "/v1/completions", {"model": MODEL_ID, "prompt": prompt, "max_tokens": 4})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "prompt", empty.text
        assert "must not be empty" in empty.json()["error"]["message"]


def test_an_abandoned_stream_stops_generating_and_does_not_delay_the_next_request(server):
    def timed_short() -> float:
        started = time.perf_counter()
        response = _post(server, "/v1/chat/completions", _chat("Say hi.", max_tokens=8))
        assert response.status_code == 200
        return time.perf_counter() - started

    baseline = min(timed_short() for _ in range(2))
    body = json.dumps(_chat("Write a long story about a number.", max_tokens=1024, stream=True))
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=300) as http:
        with http.stream("POST", server.url + "/v1/chat/completions", content=body, headers=headers) as stream:
            for i, _ in enumerate(stream.iter_lines()):
                if i >= 3:
                    break  # the client goes away after a few chunks: the connection closes here
    after = timed_short()
    # generating the 1,000 tokens left would take tens of seconds here; stopping costs at most a step or two
    assert after < baseline + 3.0, (baseline, after)


def test_bad_requests_through_the_openai_client(client):
    import openai

    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(**_chat(max_tokens=-1))
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(**{**_chat(max_tokens=4), "model": "nope"})


def test_body_size_and_unknown_routes(server):
    huge = json.dumps(_chat("x" * (2 << 20)))
    response = _post(server, "/v1/chat/completions", huge)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    response = httpx.get(server.url + "/v1/nothing-here", headers={"authorization": f"Bearer {KEY}"})
    assert response.status_code == 404 and "error" in response.json()


def test_api_key_is_required(server):
    import openai

    assert _post(server, "/v1/chat/completions", _chat(max_tokens=2), key=None).status_code == 401
    wrong = _post(server, "/v1/chat/completions", _chat(max_tokens=2), key="sk-wrong")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert _post(server, "/v1/chat/completions", "{not json", key=None).status_code == 401  # auth comes first
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/health").status_code == 200  # probes need no key
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0).models.list()


# ------------------------------------------------------------------------------------------ load


def test_64_concurrent_requests_all_answered_and_batched(server):
    before = httpx.get(server.url + "/health").json()["batching"]

    def one(i: int) -> int:
        body = _chat(f"What is {i} plus {i}?", max_tokens=4)
        return _post(server, "/v1/chat/completions", body).status_code

    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(one, range(64)))
    assert statuses == [200] * 64
    after = httpx.get(server.url + "/health").json()["batching"]
    rows, batches = after["rows"] - before["rows"], after["batches"] - before["batches"]
    assert rows == 64
    assert batches < 64 and after["largest"] > 1  # concurrent requests shared forward passes


# ------------------------------------------------------------------------------------------ back to data


def test_longcot_generate_openai_backend_against_the_endpoint(server, tmp_path):
    """The loop from student back to data: `longcot generate --backend openai` samples from the endpoint."""
    from longcot.recordfiles import load_records, write_records
    from longcot.records import new_problem

    problems = tmp_path / "problems.jsonl"
    write_records(problems, [new_problem(q, source="test:serve", reference_answer=a)
                             for q, a in [("What is 2 + 3?", "5"), ("What is 10 - 4?", "6")]])
    out = tmp_path / "samples.jsonl"
    before = httpx.get(server.url + "/health").json()["batching"]["rows"]
    env = {**os.environ, KEY_ENV: KEY, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    cmd = [LONGCOT, "generate", "--input", str(problems), "--output", str(out), "--backend", "openai",
           "--model", MODEL_ID, "--base-url", server.base_url, "--n", "2", "--max-tokens", "8",
           "--temperature", "0.7", "--seed", "3", "--set", f"openai.api_key_env={KEY_ENV}",
           "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0 and RAY_START_TIMEOUT in result.stderr:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    rows = load_records(out)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert all(r["response"] and r["error"] is None and r["finish_reason"] in ("stop", "length") for r in rows)
    assert all(r["output_tokens"] and r["prompt_tokens"] for r in rows)
    assert httpx.get(server.url + "/health").json()["batching"]["rows"] - before == 4  # the endpoint made them
    written = out.read_text() + "".join(p.read_text() for p in (tmp_path / "runs").rglob("*.json"))
    assert KEY not in written


# ------------------------------------------------------------------------------------------ shutdown (last)


def test_sigterm_stops_everything_and_leaves_no_process(server):
    import psutil

    parent = psutil.Process(server.proc.pid)
    spawned = parent.children(recursive=True)
    assert len(spawned) >= 3  # Ray's GCS, raylet, Serve controller/proxy/replica workers, ...
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(180) == 0, server.log_tail()
    assert "stopped" in server.log_tail()
    deadline = time.monotonic() + 60
    alive = spawned
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.5)
    assert not alive, [(p.pid, p.name()) for p in alive]
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url + "/health", timeout=5)
