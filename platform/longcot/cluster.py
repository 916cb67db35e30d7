"""Connecting to Ray, and checking that the cluster can ever give a stage what it asks for.

Ray waits for ever on a request no node can satisfy (an actor asking for a GPU on a CPU-only cluster
hangs instead of failing), so every stage that asks for GPUs or custom resources calls
``require_resources`` first and fails at once with a message that says what is missing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from longcot.errors import ResourceError
from longcot.settings import RayConfig, StageResources

log = logging.getLogger(__name__)


def connect(config: RayConfig | None = None) -> None:
    """Connect to ``config.address`` / ``$RAY_ADDRESS`` when given, else start a laptop-safe local instance.

    A local instance gets an explicit auth mode (``$RAY_AUTH_MODE``, default ``disabled``: it listens on
    loopback only), a bounded object store, and no dashboard unless asked for.
    """
    import ray

    if ray.is_initialized():
        return
    config = config or RayConfig()
    address = config.address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=config.num_cpus,
        object_store_memory=config.object_store_memory_mb * 1024 * 1024,
        include_dashboard=config.include_dashboard,
        log_to_driver=True,
        runtime_env=runtime_env,
        _node_ip_address="127.0.0.1",
    )


def shutdown_if_local() -> None:
    """Shut Ray down if this process started it (never disconnects others from a shared cluster)."""
    import ray

    if ray.is_initialized() and not os.environ.get("RAY_ADDRESS"):
        ray.shutdown()


def _node_can_host(node: dict[str, Any], demand: dict[str, float]) -> bool:
    totals = node.get("Resources", {})
    return all(totals.get(name, 0.0) >= amount for name, amount in demand.items() if amount > 0)


def demand_of(resources: StageResources) -> dict[str, float]:
    """The resource bundle of one worker, in Ray's resource names."""
    demand: dict[str, float] = {"CPU": resources.num_cpus}
    if resources.num_gpus:
        demand["GPU"] = resources.num_gpus
    demand.update(resources.resources)
    if resources.accelerator_type:
        demand[f"accelerator_type:{resources.accelerator_type}"] = 0.001
    return demand


def autoscaler_node_types() -> list[dict[str, float]]:
    """Resource totals of the node types the autoscaler may still start (empty on a fixed cluster)."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status
        import ray

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception:  # no autoscaler v2 on this cluster: nothing can be added
        return []
    types = []
    config_types = getattr(status, "node_types", None) or {}
    for info in config_types.values():
        resources = getattr(info, "resources", None) or {}
        if resources:
            types.append(dict(resources))
    return types


def require_resources(resources: StageResources, what: str, count: int = 1) -> None:
    """Fail fast (``ResourceError``) unless some node, present or startable, can host one worker of ``what``.

    ``count`` workers are wanted in all; that is only checked for GPUs against the cluster's total.
    """
    import ray

    demand = demand_of(resources)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if any(_node_can_host(n, demand) for n in nodes):
        if resources.num_gpus:
            total = sum(n.get("Resources", {}).get("GPU", 0.0) for n in nodes)
            if total < resources.num_gpus * count and not autoscaler_node_types():
                raise ResourceError(
                    f"{what} needs {resources.num_gpus * count:g} GPUs in all "
                    f"({count} workers x {resources.num_gpus:g}), but the cluster has {total:g} and cannot grow"
                )
        return
    if any(all(t.get(k, 0.0) >= v for k, v in demand.items() if v > 0) for t in autoscaler_node_types()):
        return
    have = _describe_cluster(nodes)
    missing = sorted(k for k, v in demand.items() if v > 0 and not any(n["Resources"].get(k, 0.0) >= v for n in nodes))
    raise ResourceError(
        f"{what} asks for {_fmt(demand)} per worker, which no node of this cluster can provide "
        f"(missing: {', '.join(missing) or 'a node with all of them at once'}; cluster: {have}). "
        "On a CPU-only machine set the stage's resources.num_gpus to 0 or use a CPU backend."
    )


def _fmt(demand: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in demand.items()) + "}"


def _describe_cluster(nodes: list[dict]) -> str:
    if not nodes:
        return "no live nodes"
    parts = []
    for n in nodes:
        res = {k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:") and "memory" not in k}
        parts.append(_fmt(res))
    return "; ".join(parts)


def gpu_available() -> bool:
    """Whether this process can see a CUDA device (for paths that run without Ray, such as serve)."""
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False
