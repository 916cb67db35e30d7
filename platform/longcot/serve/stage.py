"""The ``serve`` stage of a job: serve the trained student (or any model) behind the OpenAI API.

In: no records (the stage reads none). ``model: "@student"`` /
``adapter: "@student"`` name what the train stage produced (its ``student_model`` when it merged one,
else ``student_base`` + ``student_adapter``).

Out: a Serve config file for ``serve deploy`` in the stage directory, written once the endpoint is up.
Then either

- ``smoke_test: true``: start the endpoint, ask it one question through the official ``openai`` client
  (listing the models, once non-streamed, once streamed), write the answer as one record (source
  ``serve:smoke``) plus ``smoke.json``, and shut everything down; or
- serve in the foreground until SIGINT/SIGTERM (a job that ends by serving its student).
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

from longcot.errors import ConfigError, ResourceError
from longcot.records import add_lineage, new_problem
from longcot.recordfiles import load_records, write_records
from longcot.serve.config import ServeConfig, ServeLineage
from longcot.serve.server import Endpoint, serve_forever
from longcot.stages import StageContext, StageResult

STUDENT = "@student"


def student_serve_config(config: ServeConfig, artifacts: dict[str, str]) -> ServeConfig:
    """``config`` with ``@student`` replaced by the train stage's artifacts; ConfigError when there are none."""
    update: dict[str, str | None] = {}
    if config.model == STUDENT:
        if config.served_model_name is None:
            update["served_model_name"] = "longcot-student"  # not the path of a merged checkpoint
        if artifacts.get("student_model"):
            update["model"] = artifacts["student_model"]
        elif artifacts.get("student_adapter") and artifacts.get("student_base"):
            update["model"] = artifacts["student_base"]
            if config.adapter is None:
                update["adapter"] = artifacts["student_adapter"]
        else:
            raise ConfigError(
                "serve.model: '@student' needs a train stage earlier in the job (no student_model or "
                f"student_base/student_adapter artifact; have: {', '.join(sorted(artifacts)) or 'none'})"
            )
    if (update.get("adapter") or config.adapter) == STUDENT:
        if not artifacts.get("student_adapter"):
            raise ConfigError("serve.adapter: '@student' needs a train stage that saved an adapter (student_adapter)")
        update["adapter"] = artifacts["student_adapter"]
    return config.model_copy(update=update) if update else config


FALLBACK_QUESTION = "What is 12 + 30?"


def smoke_problem(config: ServeConfig, artifacts: dict[str, str]) -> dict:
    """The problem record the smoke test asks: ``smoke.prompt``, else the first held-out problem of the job."""
    held = artifacts.get("heldout_records")
    if not config.smoke.prompt and held and Path(held).exists() and (rows := load_records(held)):
        return rows[0]
    return new_problem(config.smoke.prompt or FALLBACK_QUESTION, source="serve:smoke")


def smoke_messages(config: ServeConfig, problem: dict) -> list[dict]:
    """The smoke test's chat messages: the problem in the student's own prompt (its card), as it trained."""
    from longcot.generate.prompting import StudentPrompt
    from longcot.train.card import load_card

    card = load_card(config.adapter, config.model)
    prompt = card.prompt if card is not None else StudentPrompt()
    return prompt.messages(problem)


def smoke_test(endpoint: Endpoint, config: ServeConfig, problem: dict) -> dict:
    """Ask the running endpoint one problem through the official openai client; what it answered (the thought
    in ``reasoning_content`` when the model wrote one)."""
    from openai import OpenAI

    from longcot.generate.openai import reasoning_of

    key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
    client = OpenAI(base_url=endpoint.base_url, api_key=key or "no-key", timeout=600.0, max_retries=0)
    model_id = config.model_id()
    listed = [m.id for m in client.models.list().data]
    if model_id not in listed:
        raise ResourceError(f"the endpoint lists {listed}, not the served model {model_id!r}")
    messages = smoke_messages(config, problem)
    ask = functools.partial(client.chat.completions.create, model=model_id, messages=messages, temperature=0.0,
                            max_tokens=config.smoke.max_tokens)
    started = time.perf_counter()
    reply = ask()
    latency = time.perf_counter() - started
    message = reply.choices[0].message
    result = {
        "endpoint": endpoint.base_url,
        "models": listed,
        "model": model_id,
        "prompt": problem["problem"],
        "problem_id": problem.get("problem_id"),
        "messages": messages,
        "content": message.content,
        "reasoning_content": reasoning_of(message),
        "finish_reason": reply.choices[0].finish_reason,
        "prompt_tokens": reply.usage.prompt_tokens,
        "completion_tokens": reply.usage.completion_tokens,
        "latency_s": round(latency, 3),
    }
    if config.smoke.stream:
        started = time.perf_counter()
        chunks = list(ask(stream=True))
        choices = [chunk.choices[0] for chunk in chunks if chunk.choices]
        result["stream"] = {
            "chunks": len(chunks),
            "content": "".join(choice.delta.content or "" for choice in choices),
            "reasoning_content": "".join(reasoning_of(choice.delta) or "" for choice in choices) or None,
            "finish_reason": next((c.finish_reason for c in reversed(choices) if c.finish_reason), None),
            "seconds": round(time.perf_counter() - started, 3),
        }
    return result


def smoke_record(result: dict, config: ServeConfig) -> dict:
    """The smoke test's answer as a record in the one schema."""
    row = new_problem(result["prompt"], source="serve:smoke", domain="math")
    row.update(
        response=result["content"],
        thought=result["reasoning_content"],
        solution=result["content"],
        model=result["model"],
        finish_reason=result["finish_reason"],
        prompt_tokens=result["prompt_tokens"],
        output_tokens=result["completion_tokens"],
    )
    return add_lineage(row, ServeLineage(backend=config.backend, model=config.model, adapter=config.adapter,
                                         endpoint=result["endpoint"], latency_s=result["latency_s"],
                                         streamed=bool(result.get("stream"))))


def run(config: ServeConfig, input_path: str | None, ctx: StageContext) -> StageResult:
    config = student_serve_config(config, ctx.artifacts)
    stage_dir = ctx.run_dir.stage_dir("serve")
    serve_file = Path(config.serve_config_file) if config.serve_config_file else stage_dir / "serve_config.yaml"
    artifacts = {"serve_config": str(serve_file)}
    if not config.smoke_test:
        from longcot.pipeline import console

        def ready(endpoint: Endpoint) -> None:
            endpoint.backend.write_serve_config(serve_file)
            console.print(f"  serving {config.model_id()} at {endpoint.base_url} until SIGINT/SIGTERM", highlight=False)

        serve_forever(config, ray=ctx.ray, workdir=stage_dir, on_ready=ready)
        return StageResult("serve", output=None, artifacts=artifacts, summary={"mode": "foreground"})
    with Endpoint(config, ray=ctx.ray, workdir=stage_dir) as endpoint:
        endpoint.backend.write_serve_config(serve_file)  # written once it is known to start
        result = smoke_test(endpoint, config, smoke_problem(config, ctx.artifacts))
    (stage_dir / "smoke.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    output = ctx.output_path("serve")
    write_records(output, [smoke_record(result, config)])
    return StageResult("serve", records_in=0, records_out=1, output=str(output), artifacts=artifacts,
                       summary={"mode": "smoke_test", **{k: v for k, v in result.items() if k != "models"}},
                       fan_out=True, headlines=[smoke_headline(result)])


def smoke_headline(result: dict) -> str:
    thought = result.get("reasoning_content") or ""
    return (f"{result['model']} answered the openai client in {result['latency_s']:.1f}s: "
            f"{len(thought)} characters of reasoning_content, {len(result.get('content') or '')} of content, "
            f"finish_reason {result['finish_reason']}")
