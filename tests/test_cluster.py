"""Cluster configs, job recipes and stage placement: what the cloud path needs, checked on a laptop.

The cluster-launcher YAMLs are validated by Ray's own schema and config preparation; the KubeRay
manifests by the fields each kind requires; the recipes against the node types of those clusters. The
fail-fast and autoscaler-hint behaviour runs on the session's real local Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from conftest import REPO
from longcot.cluster import (
    AUTOSCALER_CONFIG_ENV,
    Autoscaler,
    JobPlacement,
    NodeType,
    autoscaler_from_config,
    demand_of,
    job_demands,
    load_autoscaler,
    placement_problem,
    require_resources,
    stage_demands,
)
from longcot.config import load_job, parse_job
from longcot.errors import ResourceError
from longcot.settings import StageResources

LAUNCHER_CONFIGS = [REPO / "cluster" / "aws.yaml", REPO / "cluster" / "gcp.yaml"]
KUBERAY_MANIFESTS = [REPO / "cluster" / "kuberay" / "raycluster.yaml", REPO / "cluster" / "kuberay" / "rayjob.yaml"]
CLUSTER_CONFIGS = LAUNCHER_CONFIGS + KUBERAY_MANIFESTS
RECIPES = [REPO / "jobs" / "r1-distill.yaml", REPO / "jobs" / "dlcot-ablation.yaml"]
IMAGE = "rayproject/ray:2.60.0-py311-gpu"


def _gpu_types(scaler: Autoscaler) -> dict[str, NodeType]:
    return {t.name: t for t in scaler.node_types if t.resources.get("GPU")}


# ---------------------------------------------------------------- cluster-launcher YAMLs


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_yaml_validates_against_the_schema_ray_ships(path):
    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    # What `ray up` does before launching: fill in the provider's defaults, then validate again.
    validate_config(prepare_config(config))


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_yaml_has_cpu_head_gpu_worker_types_image_and_shared_memory(path):
    config = yaml.safe_load(path.read_text())
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert not head["resources"].get("GPU"), "the head is a CPU node"
    assert config["idle_timeout_minutes"] > 0
    docker = config["docker"]
    assert docker["image"] == IMAGE and "ray-ml" not in json.dumps(config)
    assert any(opt.startswith("--shm-size=") for opt in docker["head_run_options"])
    scaler = autoscaler_from_config(config, str(path))
    gpu = _gpu_types(scaler)
    accelerators = {k.split(":", 1)[1] for t in gpu.values() for k in t.resources if k.startswith("accelerator_type:")}
    assert accelerators >= {"L4", "H100"}
    train = next(t for t in gpu.values() if "accelerator_type:H100" in t.resources)
    assert train.resources["GPU"] == 8
    for name, spec in types.items():
        if name == config["head_node_type"]:
            continue
        assert 0 == spec["min_workers"] < spec["max_workers"], name  # every worker type scales from zero
        assert any(o.startswith("--shm-size=") for o in spec["docker"]["worker_run_options"]), name
    assert any("longcot[gpu]" in cmd for cmd in config["setup_commands"])
    assert any("--autoscaling-config=~/ray_bootstrap_config.yaml" in c for c in config["head_start_ray_commands"])


def _rays_default_amis() -> set[str]:
    """The AMIs Ray's AWS launcher substitutes for a missing ImageId, read from its source (the module itself
    needs boto3 to import)."""
    import ast

    import ray

    source = (Path(ray.__file__).parent / "autoscaler" / "_private" / "aws" / "config.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DEFAULT_AMI" for t in node.targets):
            return set(ast.literal_eval(node.value).values())
    raise AssertionError("Ray's AWS config no longer defines DEFAULT_AMI")


def test_aws_nodes_boot_the_current_dlami_through_its_public_ssm_parameter_not_rays_default():
    config = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    defaults = _rays_default_amis()
    assert len(defaults) > 10  # the per-region table of the Ubuntu 18.04 DLAMI Ray falls back to
    for name, spec in config["available_node_types"].items():
        image = spec["node_config"].get("ImageId", "")
        # what makes Ray keep it (not "" or "latest_dlami"), and EC2 resolve it at launch in every region
        assert image.lower() not in ("", "latest_dlami") and image not in defaults, name
        assert image == ("resolve:ssm:/aws/service/deeplearning/ami/x86_64/"
                         "base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"), name


def test_gcp_nodes_boot_a_deep_learning_vm_family_with_a_cuda13_capable_driver():
    config = yaml.safe_load((REPO / "cluster" / "gcp.yaml").read_text())
    for name, spec in config["available_node_types"].items():
        [boot] = [d for d in spec["node_config"]["disks"] if d.get("boot")]
        project, family = re.fullmatch(r"projects/([^/]+)/global/images/family/([^/]+)",
                                       boot["initializeParams"]["sourceImage"]).groups()
        assert project == "deeplearning-platform-release", name  # the newest image of a family, at each launch
        driver = re.search(r"-nvidia-(\d+)$", family)
        assert driver and int(driver.group(1)) >= 580, f"{name}: {family} (CUDA 13 builds need driver 580+)"


# ---------------------------------------------------------------- KubeRay manifests


def _check_pod_template(template: dict, where: str) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no containers"
    for c in containers:
        assert c["name"] and c["image"], f"{where}: a container needs a name and an image"
    volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
    shm = [m for m in containers[0].get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
    assert shm and volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory", f"{where}: /dev/shm in memory"
    return containers


def _check_ray_cluster_spec(spec: dict, where: str) -> None:
    """The fields KubeRay's ray.io/v1 CRD requires, plus what autoscaling needs."""
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams are strings"
    _check_pod_template(head["template"], f"{where} head")
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        name = group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        assert group["maxReplicas"] > group["minReplicas"], f"{name} autoscales"
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), name
        containers = _check_pod_template(group["template"], f"{where} {name}")
        gpus = containers[0]["resources"]["limits"].get("nvidia.com/gpu")
        assert gpus is None or group["rayStartParams"]["num-gpus"] == gpus, f"{name}: Ray sees the pod's GPUs"


def test_kuberay_raycluster_carries_the_fields_its_kind_requires():
    doc = yaml.safe_load(KUBERAY_MANIFESTS[0].read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    _check_ray_cluster_spec(doc["spec"], "RayCluster")


def test_kuberay_rayjob_runs_a_longcot_job_that_loads():
    doc = yaml.safe_load(KUBERAY_MANIFESTS[1].read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] in ("K8sJobMode", "HTTPMode")
    _check_ray_cluster_spec(spec["rayClusterSpec"], "RayJob")
    entry = spec["entrypoint"]
    assert "longcot run jobs/" in entry
    job_file = entry.split("longcot run ", 1)[1].split()[0]
    load_job(REPO / job_file)  # the job the RayJob runs is a valid recipe


@pytest.mark.parametrize("path", CLUSTER_CONFIGS, ids=lambda p: p.name)
def test_every_cluster_offers_the_same_node_roles(path):
    scaler = load_autoscaler(path)
    roles = {(t.resources.get("GPU", 0), next((k for k in t.resources if k.startswith("accelerator")), None))
             for t in scaler.node_types}
    assert {(0, None), (4, "accelerator_type:L4"), (8, "accelerator_type:H100")} <= roles
    assert all(t.min_workers == 0 < t.max_workers for t in scaler.node_types)


# ---------------------------------------------------------------- can a demand ever be placed?

CPU_LAPTOP = [{"CPU": 2.0, "memory": 8e9}]
AWS = load_autoscaler(LAUNCHER_CONFIGS[0])


def test_gpu_demand_on_a_fixed_cpu_cluster_is_refused_naming_the_gpu():
    problem = placement_problem({"CPU": 1, "GPU": 1}, 1, CPU_LAPTOP, None)
    assert problem and "no node can host one worker" in problem and "GPU" in problem


def test_cpu_workers_are_counted_against_the_live_nodes():
    assert placement_problem({"CPU": 1}, 2, CPU_LAPTOP, None) is None
    assert placement_problem({"CPU": 1}, 3, CPU_LAPTOP, None) == "at most 2 workers fit at once, 3 wanted"
    assert placement_problem({"CPU": 0}, 1000, CPU_LAPTOP, None) is None  # asks for nothing a node lacks


def test_node_types_the_autoscaler_may_start_make_gpu_demands_placeable():
    head_only = [{"CPU": 0.0}]
    h100x8 = demand_of(StageResources(num_cpus=8, num_gpus=8, accelerator_type="H100"))
    assert placement_problem(h100x8, 1, head_only, AWS) is None
    assert placement_problem(h100x8, 2, head_only, AWS) is None  # train-h100: max_workers 2
    assert placement_problem(h100x8, 3, head_only, AWS) == "at most 2 workers fit at once, 3 wanted"
    one_l4 = demand_of(StageResources(num_cpus=4, num_gpus=1, accelerator_type="L4"))
    assert placement_problem(one_l4, 24, head_only, AWS) is None  # 6 nodes x 4 GPUs
    assert placement_problem(one_l4, 25, head_only, AWS) is not None
    a100 = demand_of(StageResources(num_gpus=1, accelerator_type="A100"))
    assert "accelerator A100" in placement_problem(a100, 1, head_only, AWS)
    too_big = demand_of(StageResources(num_gpus=16))
    assert "no node can host one worker" in placement_problem(too_big, 1, head_only, AWS)


def test_the_cluster_wide_worker_cap_limits_what_node_types_add():
    many = Autoscaler((NodeType("gpu", {"CPU": 8, "GPU": 1}, max_workers=10),), max_workers=3, source="t")
    assert placement_problem({"CPU": 1, "GPU": 1}, 3, [{"CPU": 0}], many) is None
    assert placement_problem({"CPU": 1, "GPU": 1}, 4, [{"CPU": 0}], many) == "at most 3 workers fit at once, 4 wanted"


def test_stage_demands_come_from_every_resources_field_with_its_worker_count():
    job = parse_job(
        {
            "train": {"use_gpu": True, "num_workers": 4, "resources": {"num_cpus": 8}},
            "perturb": {"kind": "shuffle_steps", "resources": {"resources": {"pinned": 1}}},
        }
    )
    by_what = {d.what: d for d in job_demands(job)}
    assert by_what["train"].count == 4
    assert by_what["train"].bundle() == {"CPU": 8, "GPU": 1}  # use_gpu: one GPU per worker
    assert by_what["perturb"].bundle() == {"CPU": 1, "pinned": 1}
    from longcot.eval.config import EvalConfig

    eval_demands = stage_demands("eval", EvalConfig())
    assert "eval.generate" in [d.what for d in eval_demands]  # nested configs count too


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
@pytest.mark.parametrize("cluster", CLUSTER_CONFIGS, ids=lambda p: p.name)
def test_every_recipe_can_be_placed_on_every_shipped_cluster(recipe, cluster):
    """Each stage's resources name a node type the cluster has: nothing waits for ever, nothing is refused."""
    job = load_job(recipe)
    scaler = load_autoscaler(cluster)
    demands = job_demands(job)
    assert demands, "a recipe declares the resources of its stages"
    for d in demands:
        problem = placement_problem(d.bundle(), d.count, [{"CPU": 0.0}], scaler)
        assert problem is None, f"{recipe.name} {d.what} on {cluster.name}: {problem}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_gpu_stages_are_pinned_to_an_accelerator_and_carry_the_submit_command(recipe):
    text = recipe.read_text()
    assert f"ray job submit --address http://127.0.0.1:8265 --working-dir . -- longcot run jobs/{recipe.name}" in text
    job = load_job(recipe)
    for d in job_demands(job):
        if d.resources.num_gpus:
            assert d.resources.accelerator_type in ("L4", "H100"), f"{d.what} lands on a known GPU node type"
    assert job.runs_dir.startswith("/mnt/longcot"), "run directories go to the shared mount on a cluster"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_vllm_replicas_ask_ray_for_the_gpus_they_shard_over(recipe):
    """vLLM takes its GPUs from tensor_parallel_size; the stage's resources must say the same to be placed."""
    from longcot.generate.config import GenerateConfig

    def generate_configs(model, path):
        if isinstance(model, GenerateConfig):
            yield path, model
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                yield from generate_configs(value, f"{path}.{name}")

    job = load_job(recipe)
    found = [(p, g) for s in job.stages() for p, g in generate_configs(getattr(job, s), s) if g.backend == "vllm"]
    assert found
    for path, gen in found:
        assert gen.resources.num_gpus == gen.vllm.tensor_parallel_size * gen.vllm.pipeline_parallel_size, path
        assert gen.vllm.max_model_len >= gen.sampling.max_tokens + 1024, f"{path}: room for prompt + output"


def test_a_laptop_job_with_nothing_to_check_does_not_start_ray(monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    was_running = ray.is_initialized()
    job = parse_job({"perturb": {"kind": "shuffle_steps"}, "train": {"num_workers": 1}})
    placement = JobPlacement.check(job)
    assert ray.is_initialized() == was_running  # the stages start (and own) Ray as they would without longcot's check
    assert placement.connected == was_running and len(placement.demands) == 2


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="the scenario is a machine without GPUs")
def test_longcot_run_refuses_a_gpu_job_on_a_cpu_laptop_before_starting_ray(tmp_path):
    job = tmp_path / "gpu.yaml"
    job.write_text(f"name: gpu\nruns_dir: {tmp_path / 'runs'}\ntrain:\n  use_gpu: true\n  num_workers: 2\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", AUTOSCALER_CONFIG_ENV)}
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "longcot"), "run", str(job)], env=env,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    assert done.returncode == 4, done.stderr  # ResourceError
    message = " ".join(done.stderr.split())
    assert "error: stage train asks for {CPU: 1, GPU: 1} per worker, x2 at once: no node can host one worker" in message
    assert "This machine (local Ray): {CPU: " in message and "Started a local Ray instance" not in done.stderr
    assert not (tmp_path / "runs").exists()
    print(f"`longcot run` refused the GPU job in {elapsed:.1f}s (interpreter start and imports included)")


# ---------------------------------------------------------------- on a real (local) Ray


def test_job_with_a_gpu_stage_fails_within_seconds_on_a_cpu_only_cluster(ray_local, tmp_path, monkeypatch):
    from longcot.pipeline import run_job

    monkeypatch.delenv(AUTOSCALER_CONFIG_ENV, raising=False)
    job = parse_job(
        {
            "name": "gpu-on-cpu",
            "runs_dir": str(tmp_path / "runs"),
            "problems": {"sources": [{"kind": "benchmark", "name": "gsm8k", "limit": 2}]},
            "train": {"use_gpu": True, "num_workers": 2},
        }
    )
    started = time.perf_counter()
    with pytest.raises(ResourceError) as info:
        run_job(job, progress=False)
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert "stage train asks for {CPU: 1, GPU: 1} per worker, x2 at once" in message
    assert "missing: GPU" in message and "resources.num_gpus to 0" in message
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert not (tmp_path / "runs").exists(), "no stage ran: the problems stage did not even start"


def test_an_autoscaler_config_makes_a_gpu_stage_placeable_and_the_error_lists_its_node_types(ray_local, monkeypatch):
    monkeypatch.setenv(AUTOSCALER_CONFIG_ENV, str(LAUNCHER_CONFIGS[0]))
    require_resources(StageResources(num_gpus=8, accelerator_type="H100"), "train worker", count=2)
    with pytest.raises(ResourceError) as info:
        require_resources(StageResources(num_gpus=8, accelerator_type="H100"), "train worker", count=3)
    assert "train-h100 {CPU: 192, GPU: 8, accelerator: H100} x2" in str(info.value)


def test_a_stage_hints_the_autoscaler_and_withdraws_the_hint_when_it_ends(ray_local):
    from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    def requested():
        raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
        return json.loads(raw) if raw else []

    job = parse_job({"train": {"num_workers": 2, "resources": {"num_cpus": 1}}})
    placement = JobPlacement.check(job)
    assert placement.snapshot["driver_node"] == ray_local.get_runtime_context().get_node_id()
    with placement.hint("train"):
        assert requested() == [{"CPU": 1}, {"CPU": 1}]  # both workers at once, where the autoscaler reads it
    assert requested() == []
    with placement.hint("problems"):  # a stage without a demand asks for nothing
        assert requested() == []

    # What the autoscaler of cluster/aws.yaml is asked for when r1-distill's training starts: eight workers
    # of the shape they will request, so they pack onto one 8xH100 node (not one node per worker).
    r1 = JobPlacement(job_demands(load_job(RECIPES[0])), connected=True)
    with r1.hint("train"):
        assert requested() == [{"CPU": 16.0, "GPU": 1.0, "accelerator_type:H100": 0.001}] * 8
    assert requested() == []


def test_the_autoscaler_config_comes_from_the_environment_and_a_missing_one_is_an_error(monkeypatch, tmp_path):
    from longcot.cluster import current_autoscaler

    monkeypatch.setenv(AUTOSCALER_CONFIG_ENV, str(KUBERAY_MANIFESTS[1]))
    scaler = current_autoscaler()
    assert scaler.source == str(KUBERAY_MANIFESTS[1])
    assert {"CPU": 200.0, "GPU": 8.0, "accelerator_type:H100": 1.0} in [t.resources for t in scaler.node_types]
    monkeypatch.setenv(AUTOSCALER_CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ResourceError, match=r"^\$LONGCOT_AUTOSCALER_CONFIG: .*missing.yaml: cannot read"):
        current_autoscaler()
