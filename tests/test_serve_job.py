"""The serve stage of a job in smoke-test mode: start the endpoint on a student (base + adapter), answer
one request through the official openai client, record it, write the Serve config, and shut down. And
the model the vllm path hands to vLLM for base + adapter (a merged directory), checked on CPU."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from longcot.config import parse_job
from longcot.pipeline import run_job
from longcot.recordfiles import load_records
from longcot.records import lineage_detail
from longcot.serve.config import ServeLineage
from test_serve_endpoint import BASE, MODEL_ID, free_port, make_student_adapter


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_student_adapter(tmp_path_factory.mktemp("student") / "adapter")


def test_job_smoke_tests_the_student_endpoint_and_shuts_down(tmp_path, adapter):
    from ray.serve.schema import ServeDeploySchema

    port = free_port()
    job = parse_job({
        "name": "serve-smoke",
        "runs_dir": str(tmp_path / "runs"),
        "ray": {"num_cpus": 2, "object_store_memory_mb": 256},
        "serve": {"model": BASE, "adapter": str(adapter), "port": port, "smoke_test": True,
                  "smoke": {"prompt": "What is 12 + 30?", "max_tokens": 12}},
    })
    run_dir = run_job(job, progress=False)

    smoke = json.loads((run_dir.path / "serve" / "smoke.json").read_text())
    assert smoke["models"] == [MODEL_ID] and smoke["model"] == MODEL_ID
    assert smoke["content"] and smoke["completion_tokens"] > 0 and smoke["finish_reason"] in ("stop", "length")
    assert smoke["stream"]["content"] == smoke["content"] and smoke["stream"]["chunks"] > 2

    entry = run_dir.manifest["stages"]["serve"]
    assert entry["records_out"] == 1 and entry["summary"]["mode"] == "smoke_test"
    (record,) = load_records(entry["output"])
    assert record["problem"] == "What is 12 + 30?" and record["response"] == smoke["content"]
    assert record["model"] == MODEL_ID and record["output_tokens"] == smoke["completion_tokens"]
    assert lineage_detail(record, ServeLineage).adapter == str(adapter)

    serve_file = entry["artifacts"]["serve_config"]
    app = ServeDeploySchema.model_validate(yaml.safe_load(open(serve_file))).applications[0]
    assert app.import_path == "longcot.serve.endpoint:build_app" and app.args["adapter"] == str(adapter.resolve())

    with pytest.raises(httpx.HTTPError):  # the endpoint is gone
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_vllm_path_serves_base_plus_adapter_as_one_merged_model(tmp_path, adapter):
    """vLLM loads one model directory: a local adapter is merged into its base first (once)."""
    from longcot.generate.hf import HFGenerator
    from longcot.serve.backends import backend_for
    from longcot.serve.config import ServeConfig

    backend = backend_for(ServeConfig(backend="vllm", adapter=str(adapter), served_model_name="student"), tmp_path)
    source = backend.llm_config()["model_loading_config"]["model_source"]
    assert source == str(tmp_path / "merged-model")
    from longcot.generate.prompting import render_prompt
    from longcot.models import load_tokenizer

    prompt = render_prompt(load_tokenizer(BASE), [{"role": "user", "content": "Pick a number."}])
    merged = HFGenerator(source, device="cpu").generate([prompt], max_tokens=6)[0].text
    student = HFGenerator(BASE, adapter=str(adapter), device="cpu").generate([prompt], max_tokens=6)[0].text
    assert merged == student
    stamp = (tmp_path / "merged-model" / "config.json").stat().st_mtime
    backend_for(ServeConfig(backend="vllm", adapter=str(adapter)), tmp_path).model_source()
    assert (tmp_path / "merged-model" / "config.json").stat().st_mtime == stamp  # not merged twice
