"""The openai backend against a real HTTP server started here: a small OpenAI-compatible FastAPI app
that serves the embedded model through HFGenerator, plus routes that fail (429s, 5xx, slow, 400) and one
that answers with the Authorization header it was sent. (The flaky remote teacher at volume is
``test_generate_flaky_teacher.py``.)"""

from __future__ import annotations

import secrets
import socket
import threading
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from longcot import records
from longcot.errors import ConfigError
from pydantic import SecretStr

from longcot.generate.config import OpenAISettings
from longcot.generate.openai import OpenAIClient, RateLimiter, messages_of, retry_delay

API_KEY_ENV = "LONGCOT_TEST_GENERATE_KEY"


def build_app(generator, key: str):
    from longcot.generate.prompting import render_prompt

    app = FastAPI()
    app.state.calls = {}
    app.state.fail_first = {}

    def complete(body: dict) -> dict:
        prompt = render_prompt(generator.tokenizer, body["messages"])
        c = generator.generate([prompt], max_tokens=body.get("max_tokens", 16), temperature=body.get("temperature", 0.0),
                               top_p=body.get("top_p", 1.0), seed=body.get("seed"))[0]
        return {
            "id": "cmpl-test", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": c.finish_reason,
                         "message": {"role": "assistant", "content": c.text}}],
            "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.output_tokens},
        }

    def count(route: str) -> int:
        app.state.calls[route] = app.state.calls.get(route, 0) + 1
        return app.state.calls[route]

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        count("ok")
        if request.headers.get("authorization") != f"Bearer {key}":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        return complete(await request.json())

    @app.post("/flaky/v1/chat/completions")
    async def flaky(request: Request):
        n = count("flaky")
        if n <= app.state.fail_first.get("429", 0):
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "0"})
        if n == app.state.fail_first.get("429", 0) + 1:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        return complete(await request.json())

    @app.post("/down/v1/chat/completions")
    async def down(request: Request):
        count("down")
        return JSONResponse({"error": {"message": "maintenance"}}, status_code=503)

    @app.post("/bad/v1/chat/completions")
    async def bad(request: Request):
        count("bad")
        return JSONResponse({"error": {"message": "max_tokens is too large"}}, status_code=400)

    @app.post("/slow/v1/chat/completions")
    async def slow(request: Request):
        import asyncio

        count("slow")
        await asyncio.sleep(2.0)
        return complete(await request.json())

    @app.post("/headers/v1/chat/completions")
    async def headers(request: Request):
        return {"choices": [{"finish_reason": "stop", "message": {
            "content": request.headers.get("authorization", "no authorization header")}}]}

    @app.post("/reasoner/v1/chat/completions")
    async def reasoner(request: Request):
        return {"choices": [{"finish_reason": "stop", "message": {
            "content": "The answer is \\boxed{5}.", "reasoning_content": "2 + 3 = 5."}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7}}

    return app


@pytest.fixture(scope="module")
def server(embedded_model):
    """A real uvicorn server on a free local port, in a thread of this process."""
    import uvicorn

    from longcot.generate.hf import HFGenerator

    generator = HFGenerator(embedded_model, batch_size=4, threads=1)
    key = "sk-test-" + secrets.token_hex(12)
    app = build_app(generator, key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline, "test server did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "app": app, "key": key}
    srv.should_exit = True
    thread.join(timeout=10)


def client(server, route="", markers="think", **settings):
    api_key = settings.pop("api_key", SecretStr(server["key"]))
    settings = {"backoff_s": 0.01, "qps": 100, **settings}
    return OpenAIClient(OpenAISettings(base_url=f"{server['url']}{route}/v1", **settings), "smollm2",
                        api_key=api_key, markers=markers)


USER = '[{"role": "user", "content": "Say hi."}]'


def test_the_api_key_shows_in_no_repr_lineage_or_fingerprint(monkeypatch):
    """The key is read from its variable into a SecretStr; what the backend describes, fingerprints or hands
    to its actors (the engine factory's repr, as Ray would log it) never spells it out."""
    from longcot.generate.backends import make_backend
    from longcot.generate.config import GenerateConfig
    from longcot.generate.samples import fingerprint

    key = "sk-test-" + secrets.token_hex(12)
    monkeypatch.setenv(API_KEY_ENV, key)
    config = GenerateConfig(backend="openai", model="m", openai={"api_key_env": API_KEY_ENV})
    backend = make_backend(config)
    assert backend.api_key().get_secret_value() == key
    shown = [repr(backend.api_key()), str(backend.api_key()), repr(backend.make_engine()), repr(config),
             repr(backend.describe()), repr(backend.identity()), repr(fingerprint(config))]
    assert not any(key in text for text in shown), shown
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(ConfigError, match=API_KEY_ENV):
        backend.api_key()


def test_helpers():
    assert messages_of(USER) == [{"role": "user", "content": "Say hi."}]
    assert messages_of("plain text") == [{"role": "user", "content": "plain text"}]
    assert retry_delay(1, 1.0, 60, 3.0) == 3.0 and retry_delay(9, 1.0, 5.0) <= 5.0
    assert 2.0 <= retry_delay(3, 1.0, 60) <= 4.0


def test_rate_limiter_spaces_requests():
    limiter = RateLimiter(20)
    started = time.perf_counter()
    for _ in range(6):
        limiter.acquire()
    assert time.perf_counter() - started >= 5 / 20 - 0.01


def test_generates_real_text_with_usage_and_auth(server):
    c = client(server)
    out = c.generate([USER, USER], max_tokens=4, seed=[1, 2])
    assert all(o.finish_reason in ("stop", "length") and o.text.strip() for o in out), out
    assert all(o.prompt_tokens > 0 and 0 < o.output_tokens <= 4 and o.attempts == 1 for o in out)
    wrong = client(server, api_key=SecretStr("sk-wrong")).generate([USER], max_tokens=2)[0]
    assert wrong.finish_reason == "error" and wrong.error.startswith("HTTP 401: bad key") and wrong.attempts == 1


def test_retries_429_then_5xx_then_succeeds(server):
    server["app"].state.calls["flaky"] = 0
    server["app"].state.fail_first["429"] = 3
    out = client(server, "/flaky", max_retries=5).generate([USER], max_tokens=3)[0]
    assert out.finish_reason != "error" and out.text
    assert out.attempts == 5 and server["app"].state.calls["flaky"] == 5  # 3 x 429, 1 x 503, then 200


def test_gives_up_after_retries_and_does_not_retry_a_400(server):
    server["app"].state.calls.update(down=0, bad=0)
    down = client(server, "/down", max_retries=2).generate([USER], max_tokens=3)[0]
    assert down.finish_reason == "error" and "HTTP 503: maintenance" in down.error and "3 attempts" in down.error
    assert server["app"].state.calls["down"] == 3
    bad = client(server, "/bad", max_retries=4).generate([USER], max_tokens=3)[0]
    assert bad.error == "HTTP 400: max_tokens is too large" and server["app"].state.calls["bad"] == 1


def test_per_request_timeout_is_retried_then_reported(server):
    server["app"].state.calls["slow"] = 0
    started = time.perf_counter()
    out = client(server, "/slow", timeout_s=0.3, max_retries=1).generate([USER], max_tokens=2)[0]
    assert out.finish_reason == "error" and out.error.startswith("timed out") and out.attempts == 2
    assert time.perf_counter() - started < 2.0


def test_the_key_goes_in_the_authorization_header_and_no_key_sends_none(server):
    keyed = client(server, "/headers").generate([USER], max_tokens=2)[0]
    assert keyed.text == f"Bearer {server['key']}"
    anonymous = client(server, "/headers", api_key=None).generate([USER], max_tokens=2)[0]
    assert anonymous.text == "no authorization header"


def test_extra_body_may_add_fields_but_not_override_the_stages_own():
    from pydantic import ValidationError

    from longcot.generate.config import OpenAISettings

    assert OpenAISettings(extra_body={"top_k": 20}).extra_body == {"top_k": 20}
    with pytest.raises(ValidationError, match="extra_body: max_tokens, model"):
        OpenAISettings(extra_body={"model": "other", "max_tokens": 9, "top_k": 20})


def test_reasoning_content_is_put_back_between_markers(server):
    think = client(server, "/reasoner").generate([USER], max_tokens=9)[0]
    assert think.text == "<think>\n2 + 3 = 5.\n</think>\n\nThe answer is \\boxed{5}."
    sky = client(server, "/reasoner", markers="sky").generate([USER], max_tokens=9)[0]
    assert sky.text.startswith("<|begin_of_thought|>\n2 + 3 = 5.") and sky.text.endswith("<|end_of_solution|>")


@pytest.mark.slow
def test_openai_stage_on_ray_with_retries_and_no_key_on_disk(server, ray_local, tmp_path, monkeypatch):
    """The whole stage through the openai backend on local Ray: every sample written, a dead endpoint gives
    error rows (the job goes on), and the API key appears in no file the run wrote."""
    from longcot.generate.config import GenerateConfig
    from longcot.generate.stage import generate_records

    monkeypatch.setenv(API_KEY_ENV, server["key"])
    problems = [records.new_problem(q, source="file:q.jsonl") for q in ("What is 2 + 3?", "What is 10 - 4?")]
    base = {"backend": "openai", "model": "smollm2", "system_prompt": "", "batch_size": 2,
            "sampling": {"n": 2, "max_tokens": 4, "temperature": 0.7},
            "openai": {"base_url": f"{server['url']}/v1", "api_key_env": API_KEY_ENV, "backoff_s": 0.01}}
    out = tmp_path / "samples.jsonl"
    result = generate_records(problems, GenerateConfig.model_validate(base), output_path=out,
                              rejected_path=tmp_path / "rejected.jsonl", progress=False,
                              summary_path=tmp_path / "run" / "summary.json")
    rows = records_of(out)
    assert result.records_out == 4 and len({r["id"] for r in rows}) == 4
    assert all(r["finish_reason"] in ("stop", "length") and r["response"] for r in rows)
    assert all(r["prompt"].startswith('[{"role": "user"') for r in rows)
    assert result.summary["ok"] + result.summary["truncated"] == 4 and result.summary["error"] == 0

    dead = {**base, "openai": {**base["openai"], "base_url": f"{server['url']}/down/v1", "max_retries": 1}}
    out2 = tmp_path / "dead.jsonl"
    result2 = generate_records(problems, GenerateConfig.model_validate(dead), output_path=out2,
                               rejected_path=tmp_path / "rejected2.jsonl", progress=False)
    rows2 = records_of(out2)
    assert result2.summary["error"] == 4 and all("HTTP 503" in r["error"] for r in rows2)
    assert all(r["finish_reason"] == "error" and r["response"] is None for r in rows2)

    # the endpoint is back: a resumed run with retry_errors regenerates exactly the failed samples
    back = GenerateConfig.model_validate({**base, "retry_errors": True})
    result3 = generate_records(problems, back, output_path=out2, rejected_path=tmp_path / "rejected2.jsonl",
                               progress=False)
    rows3 = records_of(out2)
    assert result3.summary["retried_errors"] == 4 and result3.summary["generated"] == 4
    assert sorted(r["id"] for r in rows3) == sorted(r["id"] for r in rows2)
    assert all(r["finish_reason"] in ("stop", "length") for r in rows3)

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert server["key"] not in path.read_text(errors="replace"), path


def records_of(path):
    from longcot.recordfiles import load_records

    return load_records(path)
