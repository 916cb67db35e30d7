"""Connecting to Ray, and placing stages where their resources are.

Ray waits for ever on a request no node can satisfy (an actor asking for a GPU on a CPU-only cluster
hangs instead of failing). So before a stage starts its workers, longcot checks that the cluster can
*ever* give it what it asks for: a live node that has the resources, or a node type the autoscaler may
still start within its limits. If neither exists the job fails at once with a ``ResourceError`` that
says what was asked for and what the cluster has.

Where the autoscaler's node types come from, first match wins:

1. ``$LONGCOT_AUTOSCALER_CONFIG``: a cluster-launcher YAML (``cluster/aws.yaml``) or a KubeRay
   ``RayCluster``/``RayJob`` manifest describing the cluster the job runs on;
2. ``~/ray_bootstrap_config.yaml``, which ``ray up`` writes on the head node, where ``ray job submit``
   runs the driver.

With neither, the cluster is taken to be fixed: only live nodes count. On a machine without GPUs and
no cluster to join, the check runs before Ray starts, against the local instance Ray would start.

Before a stage runs, ``JobPlacement.hint`` asks the autoscaler for the stage's workers at once
(``ray.autoscaler.sdk.request_resources``) instead of letting it scale up a node at a time, and
withdraws the request when the stage ends so idle GPU nodes can time out.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml
from pydantic import BaseModel

from longcot.errors import ResourceError
from longcot.settings import RayConfig, StageResources
from longcot.yamlfile import read_yaml

AUTOSCALER_CONFIG_ENV = "LONGCOT_AUTOSCALER_CONFIG"
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
# Fields of a stage config that say how many workers of its ``resources`` run at the same time.
WORKER_COUNT_FIELDS = ("num_workers", "concurrency", "num_replicas", "actors")
_MANY = 1 << 30  # workers of a demand that asks for nothing a node could run out of
_CONNECTING = threading.Lock()


def connect(config: RayConfig | None = None) -> None:
    """Connect to ``config.address`` / ``$RAY_ADDRESS`` when given, else start a laptop-safe local instance.

    A local instance gets an explicit auth mode (``$RAY_AUTH_MODE``, default ``disabled``: it listens on
    loopback only), a bounded object store, and no dashboard unless asked for.
    """
    import ray

    with _CONNECTING:  # stage runs that go on at once (eval's model variants) start one instance between them
        if not ray.is_initialized():
            _connect(config or RayConfig())


def _connect(config: RayConfig) -> None:
    import ray

    address = config.address or os.environ.get("RAY_ADDRESS")
    if address:
        # No runtime_env here: under `ray job submit` it would replace the job's own (its uploaded
        # --working-dir, where this driver runs, would be released and deleted under it).
        ray.init(address=address, log_to_driver=True)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # workers print as they go; set here for Ray's processes to inherit, not as a job runtime_env: Ray starts
    # workers for a job with a runtime_env afresh, so the ones it prestarts (one per CPU) would go unused
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    ray.init(
        num_cpus=config.num_cpus,
        object_store_memory=config.object_store_memory_mb * 1024 * 1024,
        include_dashboard=config.include_dashboard,
        log_to_driver=True,
        _node_ip_address="127.0.0.1",
    )


def shutdown_if_local() -> None:
    """Shut Ray down if this process started it (never disconnects others from a shared cluster)."""
    import ray

    if ray.is_initialized() and not os.environ.get("RAY_ADDRESS"):
        ray.shutdown()


# ---------------------------------------------------------------- demands


def demand_of(resources: StageResources) -> dict[str, float]:
    """The resource bundle of one worker, in Ray's resource names."""
    demand: dict[str, float] = {"CPU": resources.num_cpus}
    if resources.num_gpus:
        demand["GPU"] = resources.num_gpus
    demand.update(resources.resources)
    if resources.accelerator_type:
        demand[f"accelerator_type:{resources.accelerator_type}"] = 0.001
    return demand


@dataclass(frozen=True)
class StageDemand:
    """``count`` workers of ``resources`` that one part of a stage (``what``) runs at the same time.

    ``copies`` of that part may run side by side (a sweep's concurrent variants): the autoscaler is asked
    for all of them, but only one copy must fit for the stage to make progress.
    """

    stage: str
    what: str
    resources: StageResources
    count: int = 1
    copies: int = 1

    def bundle(self) -> dict[str, float]:
        return demand_of(self.resources)


def stage_demands(stage: str, config: BaseModel) -> list[StageDemand]:
    """Every ``StageResources`` in a stage's config, with how many of its workers run at once.

    A config (or a config nested in it, such as ``eval.generate``) declares placement with a
    ``resources`` field; the count is its ``num_workers`` / ``concurrency`` / ``num_replicas`` /
    ``actors`` (the autoscaling minimum when ``autoscaling`` is set), else 1. A config with
    ``max_concurrent`` (a sweep) runs that many copies of what is nested in it.
    """
    found: list[StageDemand] = []

    def visit(model: BaseModel, path: str, copies: int) -> None:
        resources = getattr(model, "resources", None)
        if isinstance(resources, StageResources):
            found.append(StageDemand(stage, path, resources, _worker_count(model), copies))
        concurrent = getattr(model, "max_concurrent", None)
        inner = copies * concurrent if isinstance(concurrent, int) and concurrent >= 1 else copies
        for name in type(model).model_fields:
            value = getattr(model, name, None)
            if isinstance(value, BaseModel) and not isinstance(value, StageResources):
                visit(value, f"{path}.{name}", inner)

    visit(config, stage, 1)
    return found


def _worker_count(model: BaseModel) -> int:
    least = getattr(getattr(model, "autoscaling", None), "min_replicas", None)  # the autoscaling minimum
    if isinstance(least, int):
        return max(1, least)
    counts = (getattr(model, name, None) for name in WORKER_COUNT_FIELDS)
    return next((n for n in counts if isinstance(n, int) and not isinstance(n, bool) and n >= 1), 1)


def job_demands(job: Any) -> list[StageDemand]:
    """The demands of every configured stage of a ``JobConfig``, in pipeline order."""
    return [d for stage in job.stages() for d in stage_demands(stage, getattr(job, stage))]


# ---------------------------------------------------------------- the autoscaler's node types


@dataclass(frozen=True)
class NodeType:
    """A kind of node the autoscaler may start: its Ray resources and how many of it may run."""

    name: str
    resources: dict[str, float]
    max_workers: int
    min_workers: int = 0


@dataclass(frozen=True)
class Autoscaler:
    """The node types an autoscaler may add, and its cap on worker nodes in all (None: no cap)."""

    node_types: tuple[NodeType, ...]
    max_workers: int | None = None
    source: str = ""

    def describe(self) -> str:
        if not self.node_types:
            return f"no worker node types ({self.source})"
        parts = [f"{t.name} {_fmt(t.resources)} x{t.max_workers}" for t in self.node_types]
        cap = f", at most {self.max_workers} workers in all" if self.max_workers is not None else ""
        return f"{'; '.join(parts)}{cap} (from {self.source})"


def autoscaler_from_config(data: dict, source: str = "<config>") -> Autoscaler:
    """Worker node types of a cluster-launcher config or of a KubeRay ``RayCluster`` / ``RayJob`` manifest."""
    if not isinstance(data, dict):
        raise ResourceError(f"{source}: not a cluster config (expected a mapping)")
    kind = data.get("kind")
    if kind in ("RayCluster", "RayJob"):
        spec = data.get("spec") or {}
        return _kuberay_autoscaler(spec.get("rayClusterSpec", {}) if kind == "RayJob" else spec, source)
    if "available_node_types" not in data:
        raise ResourceError(
            f"{source}: neither a cluster-launcher config (available_node_types) nor a KubeRay manifest"
        )
    cap = data.get("max_workers")
    head = data.get("head_node_type")
    types = []
    for name, spec in (data.get("available_node_types") or {}).items():
        if name == head:
            continue  # the head is a live node already
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        max_workers = spec.get("max_workers", cap if cap is not None else _MANY)
        types.append(NodeType(name, resources, int(max_workers), int(spec.get("min_workers", 0))))
    return Autoscaler(tuple(types), None if cap is None else int(cap), source)


def _kuberay_autoscaler(spec: dict, source: str) -> Autoscaler:
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    types = []
    for group in spec.get("workerGroupSpecs") or []:
        replicas = int(group.get("replicas", 0) or 0)
        most = int(group.get("maxReplicas", replicas) or 0) if autoscaling else replicas
        least = int(group.get("minReplicas", 0) or 0)
        types.append(NodeType(group.get("groupName", "workers"), _pod_resources(group), most, least))
    return Autoscaler(tuple(types), None, source)


def _pod_resources(group: dict) -> dict[str, float]:
    """What Ray sees on a pod of a worker group: rayStartParams first, else the container's limits."""
    params = group.get("rayStartParams") or {}
    containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    limits = (containers[0].get("resources") or {}).get("limits") or {}
    resources: dict[str, float] = {}
    cpus = params.get("num-cpus", limits.get("cpu"))
    if cpus is not None:
        resources["CPU"] = _quantity(cpus)
    gpus = params.get("num-gpus", limits.get("nvidia.com/gpu"))
    if gpus is not None and _quantity(gpus):
        resources["GPU"] = _quantity(gpus)
    custom = params.get("resources")
    if custom:
        resources.update({k: float(v) for k, v in yaml.safe_load(str(custom).strip("'\"").replace('\\"', '"')).items()})
    return resources


def _quantity(value: Any) -> float:
    text = str(value).strip().strip("'\"")
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def load_autoscaler(path: str | Path) -> Autoscaler:
    """Read the node types of a cluster config file (see ``autoscaler_from_config``)."""
    p = Path(path).expanduser()
    return autoscaler_from_config(read_yaml(p, what="cluster config", error=ResourceError), str(p))


def current_autoscaler() -> Autoscaler | None:
    """The autoscaler of the cluster this process runs on, when its config can be found (see module doc)."""
    explicit = os.environ.get(AUTOSCALER_CONFIG_ENV)
    if explicit:
        try:
            return load_autoscaler(explicit)
        except ResourceError as exc:
            raise ResourceError(f"${AUTOSCALER_CONFIG_ENV}: {exc}") from None
    bootstrap = Path(BOOTSTRAP_CONFIG).expanduser()
    return load_autoscaler(bootstrap) if bootstrap.is_file() else None


# ---------------------------------------------------------------- can it ever be placed?


def workers_per_node(capacity: dict[str, float], demand: dict[str, float]) -> int:
    """How many workers of ``demand`` fit on a node with ``capacity`` (resource totals)."""
    fits = (math.floor(capacity.get(name, 0.0) / amount + 1e-9) for name, amount in demand.items() if amount > 0)
    return min([_MANY, *fits])  # _MANY at most, and when nothing is asked for


def placement_problem(
    demand: dict[str, float], count: int, nodes: list[dict[str, float]], scaler: Autoscaler | None
) -> str | None:
    """Why ``count`` workers of ``demand`` can never run at once, or None when they can.

    ``nodes`` are the resource totals of the live nodes. Capacity counts the live nodes plus every
    node the autoscaler may add within its limits; live autoscaled nodes are counted twice, so a demand
    that could be met is never refused (one just over the limits may be let through, and then waits).
    """
    live = sum(min(workers_per_node(n, demand), count) for n in nodes)
    if live >= count:
        return None
    addable = 0
    if scaler is not None:
        room = scaler.max_workers if scaler.max_workers is not None else _MANY
        fits = ((workers_per_node(t.resources, demand), t) for t in scaler.node_types if t.max_workers > 0)
        for per_node, node_type in sorted(fits, key=lambda pair: -pair[0]):
            if per_node <= 0 or room <= 0:
                continue
            n_nodes = min(node_type.max_workers, room, math.ceil((count - live - addable) / per_node))
            addable += n_nodes * per_node
            room -= n_nodes
            if live + addable >= count:
                return None
    if live == 0 and addable == 0:
        missing = sorted(k for k, v in demand.items() if v > 0 and not any(n.get(k, 0.0) >= v for n in nodes))
        lacking = ", ".join(m.replace("accelerator_type:", "accelerator ") for m in missing)
        return f"no node can host one worker (missing: {lacking or 'a node with all of them at once'})"
    return f"at most {live + addable} workers fit at once, {count} wanted"


def require_resources(
    resources: StageResources, what: str, count: int = 1, *, nodes: list[dict[str, float]] | None = None,
    nodes_are: str = "Live nodes",
) -> None:
    """Fail fast (``ResourceError``) unless ``count`` workers of ``what`` can run at once, now or after scaling.

    ``nodes``: the resource totals to place on; default the live nodes of the Ray connection (``connect``).
    The message says what one worker asks for, what the nodes have and which node types the autoscaler
    may add.
    """
    if nodes is None:
        import ray

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    scaler = current_autoscaler()
    demand = demand_of(resources)
    problem = placement_problem(demand, count, nodes, scaler)
    if problem is None:
        return
    grow = scaler.describe() if scaler else (
        f"no autoscaler config found (${AUTOSCALER_CONFIG_ENV} or {BOOTSTRAP_CONFIG})")
    fix = (
        "On a CPU-only machine set the stage's resources.num_gpus to 0 (use_gpu: false) or use a CPU backend; "
        "on a cluster, add a node type that has them or lower the request."
        if demand.get("GPU")
        else "Lower the stage's resources or worker count, or add a node type that has them."
    )
    shown = [_fmt({k: v for k, v in n.items() if not k.startswith("node:") and "memory" not in k}) for n in nodes]
    raise ResourceError(
        f"{what} asks for {_fmt(demand)} per worker, x{count} at once: {problem}. "
        f"{nodes_are}: {'; '.join(shown) or 'none'}. Autoscaler: {grow}. {fix}"
    )


def _fmt(demand: dict[str, float]) -> str:
    parts = []
    for k, v in demand.items():
        if k.startswith("accelerator_type:"):
            parts.append(f"accelerator: {k.split(':', 1)[1]}")
        elif k == "memory" or k == "object_store_memory":
            parts.append(f"{k}: {v / 2**30:.1f} GiB")
        else:
            parts.append(f"{k}: {v:g}")
    return "{" + ", ".join(parts) + "}"


# ---------------------------------------------------------------- a job's placement


def cluster_snapshot() -> dict[str, Any]:
    """The nodes the job runs on (ids and resources) and where the driver is, for the run manifest (connected)."""
    import ray

    nodes = [{"id": n["NodeID"], "resources": {k: v for k, v in n["Resources"].items() if not k.startswith("node:")}}
             for n in ray.nodes() if n.get("Alive")]
    scaler = current_autoscaler()
    return {"driver_node": ray.get_runtime_context().get_node_id(), "nodes": nodes,
            "autoscaler": scaler.describe() if scaler else None}


@dataclass
class JobPlacement:
    """Where a job's stages can run: checked once before any stage, hinted to the autoscaler per stage."""

    demands: list[StageDemand]
    connected: bool = False
    snapshot: dict[str, Any] | None = None

    @classmethod
    def check(cls, job: Any) -> "JobPlacement":
        """Fail fast (``ResourceError``) if any stage's demand can never be placed.

        On a laptop with nothing to check (no stage asks for more than one CPU) it does not start Ray,
        so a job without Ray stages stays Ray-free and stages that own their Ray instance keep it.
        """
        import ray

        demands = job_demands(job)
        on_cluster = ray.is_initialized() or job.ray.address or os.environ.get("RAY_ADDRESS")
        if not demands or not (on_cluster or any(_worth_checking(d) for d in demands)):
            return cls(demands)
        # Without GPUs the local instance ``connect`` would start has this machine's CPUs and nothing more, so
        # a laptop refuses before paying for Ray's start-up. Where GPUs may exist, Ray must look.
        gpus = shutil.which("nvidia-smi") or any(map(os.environ.get, ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")))
        if not (on_cluster or gpus):
            machine = {"CPU": float(job.ray.num_cpus or os.cpu_count() or 1)}
            for d in demands:
                require_resources(d.resources, f"stage {d.what}", d.count, nodes=[machine],
                                  nodes_are="This machine (local Ray)")
        connect(job.ray)
        for d in demands:
            require_resources(d.resources, f"stage {d.what}", d.count)
        return cls(demands, connected=True, snapshot=cluster_snapshot())

    @contextlib.contextmanager
    def hint(self, stage: str) -> Iterator[None]:
        """Around one stage: ask the autoscaler for all its workers at once, withdraw the request afterwards.

        Only a hint: a fixed cluster ignores it, and each request replaces the previous one. Only the job's
        driver asks: a job run inside a task (a sweep's variant) would replace the sweep's request with its own,
        and withdraw it when it ends.
        """
        import ray

        mine = [d for d in self.demands if d.stage == stage]
        if not (self.connected and mine and ray.get_runtime_context().worker.mode == ray.SCRIPT_MODE):
            yield
            return
        from ray.autoscaler.sdk import request_resources

        # The same shape the workers ask for: the accelerator marker stays a fraction of the node's one
        # unit, so eight 1-GPU H100 workers pack onto one 8-GPU node, as the workers themselves will.
        request_resources(bundles=[{k: v for k, v in d.bundle().items() if v > 0}
                                   for d in mine for _ in range(d.count * d.copies)])
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # a failed withdrawal must not hide the stage's own error
                request_resources(bundles=[])


def _worth_checking(demand: StageDemand) -> bool:
    """Whether a demand could fail to fit a laptop: GPUs, custom resources, or more than one CPU at once."""
    res = demand.resources
    return bool(res.num_gpus or res.resources or res.accelerator_type or res.num_cpus * demand.count > 1)
