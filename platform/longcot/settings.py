"""Config building blocks shared by every stage's config class (kept apart from ``config`` to avoid cycles)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageResources(StrictModel):
    """What one worker of a stage asks Ray for. Stages land on the node types that have these."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs per worker (actor or task).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per worker. 0 on CPU-only machines.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per worker, e.g. {rollout_node: 1}."
    )
    accelerator_type: str | None = Field(
        None, description="Ray accelerator type such as H100, A10G or L4; pins GPU work to that node type."
    )

    def ray_remote_args(self) -> dict[str, Any]:
        """Keywords for Ray's ``.options()``: ``num_cpus``, and every other field that asks for something."""
        asked = {name: value for name, value in self.model_dump(exclude={"num_cpus"}).items() if value}
        return {"num_cpus": self.num_cpus, **asked}


class RayConfig(StrictModel):
    """How to reach Ray. With ``RAY_ADDRESS`` set (as under ``ray job submit``) longcot connects to it."""

    address: str | None = Field(None, description="Cluster address; default: $RAY_ADDRESS, else start a local one.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local instance (default: all).")
    object_store_memory_mb: int = Field(1024, ge=128, description="Object store size of a local instance.")
    include_dashboard: bool = Field(False, description="Start the dashboard with a local instance.")
