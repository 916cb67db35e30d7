"""The run directory: one per job or stage run, holding each stage's output and a manifest.

``manifest.json`` records what makes the run reproducible and auditable: the versions of ray, torch,
transformers (and vllm when present), the config and its hash, hashes of the input files, and for each
stage the counts of records in, out and rejected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform as _platform  # the standard-library module (longcot never shadows it)
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from longcot import __version__
from longcot.errors import ConfigError

TRACKED_PACKAGES = ("ray", "torch", "transformers", "peft", "deepspeed", "vllm", "math-verify")


def package_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def hash_path(path: str | Path) -> str:
    """sha256 of a file, or of the sorted files of a directory (names and contents)."""
    p = Path(path)
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(str(f.relative_to(p)).encode())
        with f.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def manifest_header(**fields: Any) -> dict[str, Any]:
    """What every manifest opens with: when (UTC, to the second) and with which package versions, then ``fields``."""
    versions = {"longcot": __version__, "python": _platform.python_version(),
                **{name: package_version(name) for name in TRACKED_PACKAGES}}
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions, **fields}


def write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON with sorted keys (anything else as ``str``), written whole: to a temporary
    name first, then renamed over ``path`` (its folder created), so a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target


class RunDir:
    """A run directory and its manifest. Stage outputs live in ``<run>/<stage>/``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.path / "manifest.json"
        if self.manifest_path.exists():
            self.manifest = json.loads(self.manifest_path.read_text())
        else:
            self.manifest = manifest_header(inputs={}, stages={})

    @classmethod
    def create(cls, root: str | Path, name: str, config_hash: str) -> "RunDir":
        """A new run directory under ``root``, never one another run already has: two runs started in the
        same second (or at once, in two processes) get ``-2``, ``-3``, ... (the directory is created
        atomically). An unwritable ``root`` is a ``ConfigError`` naming it."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{name}-{stamp}-{config_hash[:6]}"
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
            for n in range(1, 1000):
                path = base if n == 1 else base.with_name(f"{base.name}-{n}")
                with contextlib.suppress(FileExistsError):  # taken: try the next name
                    path.mkdir()
                    return cls(path)
        except OSError as exc:
            raise ConfigError(f"runs directory {root}: cannot create a run directory there ({exc.strerror})") from None
        raise ConfigError(f"runs directory {root}: no free run directory name for {base.name}")

    def stage_dir(self, stage: str) -> Path:
        d = self.path / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def set_config(self, job) -> None:
        """Record ``job`` (a ``JobConfig``): its config and the config's hash."""
        self.manifest.update(config=job.model_dump(mode="json"), config_hash=job.config_hash())
        self.save()

    def add_input(self, path: str | Path) -> None:
        p = Path(path)
        if p.exists():
            self.manifest["inputs"][str(path)] = hash_path(p)
            self.save()

    def record_stage(self, stage: str, entry: dict[str, Any]) -> None:
        self.manifest["stages"][stage] = entry
        self.save()

    def save(self) -> None:
        write_json(self.manifest_path, self.manifest)
