"""The reproducibility manifest of an evaluation: everything a number depends on, written beside it.

Records sampling parameters and seeds, dtype, backend, model references with their revision (hub
commit, embedded package version) and a content fingerprint, adapters' hashes, benchmark file hashes
and instructions, the verifier settings, and the versions of longcot, transformers, vllm and torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform as _platform  # the standard library's (longcot never shadows it)
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from longcot import models
from longcot.rundir import hash_path, manifest_header

FULL_HASH_LIMIT = 2 << 30  # hash whole model directories up to 2 GiB; above, configs plus file sizes
_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})(?:/|$)")


def directory_fingerprint(path: str | Path) -> dict[str, str]:
    """A content hash of a model directory: every byte when small, else configs plus weight-file sizes."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file())
    total = sum(f.stat().st_size for f in files)
    if total <= FULL_HASH_LIMIT:
        return {"sha256": hash_path(p), "method": "all files"}
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(p)).encode())
        if f.suffix in {".json", ".txt", ".model", ".py"}:
            digest.update(f.read_bytes())
        else:
            digest.update(str(f.stat().st_size).encode())
    return {"sha256": digest.hexdigest(), "method": "configs and weight sizes (directory over 2 GiB)"}


def model_identity(ref: str, revision: str | None = None) -> dict[str, Any]:
    """What exactly ``ref`` is: its resolved location, revision, and a fingerprint where it is local."""
    info: dict[str, Any] = {"ref": ref, "revision": revision}
    if models.is_embedded(ref):
        name = ref[len(models.EMBEDDED_PREFIX):]
        spec = models.EMBEDDED.get(name)
        if spec is not None:
            try:
                package = spec.package.replace("_", "-")
                info["revision"] = revision or f"{package}=={metadata.version(package)}"
                info["gguf_sha256"] = hash_path(models.gguf_path(name))
            except Exception as exc:  # the package is missing: the run itself will say so
                info["error"] = str(exc)
        return info
    local = Path(ref)
    if local.is_dir():
        snapshot = _SNAPSHOT.search(str(local.resolve()))
        if snapshot and not revision:
            info["revision"] = snapshot.group(1)
        info["fingerprint"] = directory_fingerprint(local)
        return info
    if not revision:
        info["revision"] = _cached_hub_revision(ref)
    return info


def _cached_hub_revision(repo_id: str) -> str | None:
    """The commit of a hub model as found in the local Hugging Face cache (None when not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return None
    match = _SNAPSHOT.search(found) if isinstance(found, str) else None
    return match.group(1) if match else None


def adapter_identity(adapter: str | None) -> dict[str, Any] | None:
    if not adapter:
        return None
    p = Path(adapter)
    return {"path": adapter, "sha256": hash_path(p) if p.exists() else None}


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": _platform.platform(), "cpus": os.cpu_count(), "gpu": None}
    with contextlib.suppress(Exception):  # no torch, or a broken CUDA: the host is described without its GPU
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    return info


def new_manifest() -> dict[str, Any]:
    """The skeleton every evaluation fills in: when, which versions, on what machine."""
    return manifest_header(host=host_info(), benchmarks={}, variants={})
