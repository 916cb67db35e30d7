"""The two ways to serve, behind one interface: ``hf`` (Ray Serve + FastAPI on transformers, CPU or GPU)
and ``vllm`` (``ray.serve.llm``'s ``LLMConfig`` + ``build_openai_app``, GPU only).

A ``ServeBackend`` refuses settings that can never work before Ray starts (``validate``), checks that the
connected cluster can run it (``check``), builds the Serve application (``application``), and writes it as a
Serve config file (``write_serve_config``), so ``serve deploy`` can start the same thing later.
``ray.serve.llm`` and vLLM are imported only on the ``vllm`` path: importing them fails on a machine without vLLM.

``reasoning: split`` on the ``vllm`` path is vLLM's own reasoning parser, named in the engine arguments
(``reasoning_parser``) and chosen from the model's thought markers by ``vllm_reasoning_parser``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Container
from pathlib import Path
from typing import Any

import yaml

from longcot.cluster import require_resources
from longcot.errors import ConfigError, ResourceError
from longcot.models import EMBEDDED, EMBEDDED_PREFIX, is_embedded, merge_adapter, resolve
from longcot.serve.config import ServeConfig
from longcot.traces import THINK_MARKERS

log = logging.getLogger("longcot.serve")

# ServeConfig fields that only matter to the job stage, not to a running application
JOB_ONLY_FIELDS = {"smoke_test", "smoke", "serve_config_file"}


class ServeBackend(ABC):
    name: str
    import_path: str  # the application builder, "module:function", called with ``app_args()``

    def __init__(self, config: ServeConfig, workdir: str | Path | None = None):
        self.config = config
        self.workdir = Path(workdir) if workdir else None

    @classmethod
    def replica_gpus(cls, config: ServeConfig) -> int:
        """GPUs one replica's engine holds whatever ``resources`` says (0: it runs where it is placed)."""
        return 0

    @abstractmethod
    def validate(self) -> None:
        """``ConfigError`` for settings that can never work, found without Ray (run before starting it)."""

    @abstractmethod
    def check(self) -> None:
        """``ResourceError`` when the connected cluster cannot run this (no node can host a replica)."""

    @abstractmethod
    def app_args(self) -> dict[str, Any]:
        """What the builder at ``import_path`` is called with (the ``args`` of the Serve config file)."""

    def application(self) -> Any:
        """The Ray Serve application to ``serve.run``: the builder imported here (the vllm one needs vLLM)."""
        return pkgutil.resolve_name(self.import_path)(self.app_args())

    def validate_model(self) -> None:
        """ConfigError for a model reference that cannot exist: an unknown embedded name, a missing path."""
        model = self.config.model
        if is_embedded(model) and model[len(EMBEDDED_PREFIX):] not in EMBEDDED:
            raise ConfigError(f"model: unknown embedded model {model!r}; allowed: "
                              + ", ".join(EMBEDDED_PREFIX + name for name in EMBEDDED))
        if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().exists():
            raise ConfigError(f"model: {model} does not exist")
        if self.config.adapter and not Path(self.config.adapter).is_dir():
            raise ConfigError(f"adapter: {self.config.adapter} is not a directory (a PEFT adapter is one)")

    def write_serve_config(self, path: str | Path) -> Path:
        """This application as a whole Serve config file for ``serve deploy``."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"# Serve config for `serve deploy {target.name}` (written by longcot, backend {self.name}).\n"
            "# The cluster needs longcot installed (or a runtime_env with it) and, with an API key,\n"
            "# the environment variable named by api_key_env set where the application is built.\n"
        )
        app = {"name": self.config.app_name, "route_prefix": "/", "import_path": self.import_path, "args": self.app_args()}
        serve_config = {"proxy_location": "HeadOnly", "http_options": {"host": self.config.host, "port": self.config.port},
                        "applications": [app]}
        target.write_text(header + yaml.safe_dump(serve_config, sort_keys=False))
        return target


class HFServeBackend(ServeBackend):
    """Ray Serve + FastAPI ingress on ``HFGenerator``; see ``longcot.serve.endpoint``."""

    name = "hf"
    import_path = "longcot.serve.endpoint:build_app"

    def validate(self) -> None:
        from longcot.serve.endpoint import api_key_digest

        api_key_digest(self.config.api_key_env)
        if self.config.device.startswith("cuda") and not self.config.resources.num_gpus:
            raise ConfigError("device: 'cuda' needs resources.num_gpus >= 1 so the replica is placed on a GPU")
        self.validate_model()

    def check(self) -> None:
        replicas = self.config.autoscaling.min_replicas if self.config.autoscaling else self.config.num_replicas
        require_resources(self.config.resources, "serve replica", count=max(1, replicas))

    def app_args(self) -> dict[str, Any]:
        args = self.config.model_dump(mode="json", exclude=JOB_ONLY_FIELDS)
        if self.config.adapter:
            args["adapter"] = str(Path(self.config.adapter).resolve())
        if Path(self.config.model).exists():
            args["model"] = str(Path(self.config.model).resolve())
        return args


class VLLMServeBackend(ServeBackend):
    """``ray.serve.llm``: vLLM engines behind Ray's OpenAI ingress, with dynamic LoRA from storage."""

    name = "vllm"
    import_path = "ray.serve.llm:build_openai_app"

    def validate(self) -> None:
        if self.config.api_key_env:
            raise ConfigError(
                "api_key_env: ray.serve.llm's OpenAI ingress has no API-key check; use backend hf, "
                "or put the vllm endpoint behind an authenticating gateway"
            )
        self.validate_model()
        if self.config.vllm.lora_path and ":" in self.config.model_id():
            raise ConfigError(
                f"served_model_name: {self.config.model_id()!r} contains ':', which ray.serve.llm uses to name an "
                "adapter (MODEL:ADAPTER); set served_model_name to a name without ':'"
            )

    def check(self) -> None:
        # resources holds the engine's GPUs at least (ServeConfig raises num_gpus to replica_gpus)
        require_resources(self.config.resources, "serve replica (vLLM)")
        require_vllm()

    @classmethod
    def replica_gpus(cls, config: ServeConfig) -> int:
        """One GPU per tensor-parallel rank (times pipeline stages)."""
        kwargs = config.vllm.engine_kwargs
        return int(kwargs.get("tensor_parallel_size") or 1) * int(kwargs.get("pipeline_parallel_size") or 1)

    @functools.cached_property
    def reasoning_parser(self) -> str | None:
        """The vLLM reasoning parser the engine runs with (None: answers are returned as generated).

        ``reasoning: raw`` has none; ``vllm.reasoning_parser`` is used as given; otherwise it is chosen from
        the student card's markers (else ``think``) and the tokenizer's vocabulary, when the tokenizer is on
        this machine (a hub model not yet downloaded gets none, with a warning naming the setting).
        """
        cfg = self.config
        if cfg.reasoning == "raw":
            return None
        if cfg.vllm.reasoning_parser:
            return cfg.vllm.reasoning_parser
        from transformers import AutoTokenizer

        from longcot.train.card import load_card

        card = load_card(cfg.adapter, cfg.model)  # the marker convention the model was trained on
        markers = card.markers if card is not None else None
        try:  # the tokenizer only when it is on this machine: offline, a hub lookup would only wait out its retries
            vocabulary = AutoTokenizer.from_pretrained(resolve(cfg.model), local_files_only=True).get_vocab()
        except (OSError, ValueError):
            vocabulary = None
        parser = vllm_reasoning_parser(markers, vocabulary) if vocabulary is not None else None
        if parser is None:
            why = ("its tokenizer is not on this machine" if vocabulary is None
                   else f"thought markers {markers or 'think'}")
            log.warning("reasoning: split has no vLLM reasoning parser for %s (%s): answers come back as generated; "
                        "set serve.vllm.reasoning_parser, or serve with backend hf", cfg.model, why)
        return parser

    def model_source(self) -> str:
        """What vLLM loads: the model (embedded models resolved to their directory), or base+adapter merged
        into the work directory once (a marker file there names the pair it was merged from)."""
        model, adapter = self.config.model, self.config.adapter
        if not adapter:
            return resolve(model)
        if self.workdir is None:
            raise ConfigError("adapter: backend vllm merges a local adapter into its base model, which needs a work directory")
        target = self.workdir / "merged-model"
        marker, pair = target / "longcot-merged-from.txt", f"{model}\n{Path(adapter).resolve()}\n"
        if not (marker.exists() and marker.read_text() == pair):
            merge_adapter(model, adapter, target)
            marker.write_text(pair)
        return str(target)

    def llm_config(self) -> dict[str, Any]:
        """The ``LLMConfig`` (as a dict, so it is also the YAML of the Serve config file)."""
        cfg = self.config
        engine_kwargs = dict(cfg.vllm.engine_kwargs)
        deployment = {k: v for k, v in cfg.replica_options().items() if k != "ray_actor_options"}
        llm: dict[str, Any] = {
            "model_loading_config": {"model_id": cfg.model_id(), "model_source": self.model_source()},
            "engine_kwargs": engine_kwargs,
            "deployment_config": deployment,
        }
        if cfg.resources.accelerator_type:
            llm["accelerator_type"] = cfg.resources.accelerator_type
        if self.reasoning_parser:  # a reasoning_parser the user put in engine_kwargs wins
            engine_kwargs.setdefault("reasoning_parser", self.reasoning_parser)
        if cfg.vllm.lora_path:
            self.validate()
            llm["lora_config"] = {
                "dynamic_lora_loading_path": cfg.vllm.lora_path,
                "max_num_adapters_per_replica": cfg.vllm.max_lora_adapters_per_replica,
            }
            engine_kwargs.setdefault("enable_lora", True)
            engine_kwargs.setdefault("max_lora_rank", cfg.vllm.max_lora_rank)
            engine_kwargs.setdefault("max_loras", cfg.vllm.max_lora_adapters_per_replica)
        return llm

    def app_args(self) -> dict[str, Any]:
        return {"llm_configs": [self.llm_config()]}  # LLMServingArgs


def vllm_reasoning_parser(markers: str | None, vocabulary: Container[str]) -> str | None:
    """The vLLM reasoning parser for a model whose thoughts use ``markers`` (``think``, ``sky``, ``none``; None:
    unknown, tried as ``think``) and whose tokens are ``vocabulary``; None when no vLLM parser can split them.

    Only ``<think>`` has one (``deepseek_r1``; Sky-T1's markers have none). vLLM's parsers look their markers up
    as single tokens of the vocabulary and fail every chat request when they are not, so a model that spells
    them in pieces gets no parser."""
    if (markers or "think") != "think":
        return None
    return "deepseek_r1" if all(marker in vocabulary for marker in THINK_MARKERS) else None


def require_vllm() -> None:
    """ResourceError unless vLLM is importable (ray.serve.llm cannot build an application without it)."""
    if importlib.util.find_spec("vllm") is None:
        raise ResourceError(
            "backend vllm needs vLLM, which is not installed here: `pip install 'longcot[gpu]'` on a GPU "
            "machine, or serve with backend hf (CPU)"
        )


BACKENDS: dict[str, type[ServeBackend]] = {"hf": HFServeBackend, "vllm": VLLMServeBackend}


def backend_for(config: ServeConfig, workdir: str | Path | None = None) -> ServeBackend:
    return BACKENDS[config.backend](config, workdir)
