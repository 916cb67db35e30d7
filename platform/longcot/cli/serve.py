"""``longcot serve``: an OpenAI-compatible endpoint for a model, in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from longcot.cli import app
from longcot.cli.options import ConfigFile, SetPairs, out, overrides, stage_config
from longcot.errors import ConfigError
from longcot.models import cache_dir


@app.command("serve")
def serve_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model: embedded:NAME, a hub id, or a local path."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="PEFT adapter directory to apply to the model."),
    host: Optional[str] = typer.Option(None, help="Address to listen on (default 127.0.0.1; 0.0.0.0 exposes it)."),
    port: Optional[int] = typer.Option(None, help="HTTP port (default 8000)."),
    api_key_env: Optional[str] = typer.Option(
        None, "--api-key-env", help="Environment variable holding the API key clients must send as a Bearer token."
    ),
    backend: Optional[str] = typer.Option(None, help="hf (Ray Serve + transformers, CPU/GPU) or vllm (GPU)."),
    served_model_name: Optional[str] = typer.Option(None, "--served-model-name", help="The model id clients ask for."),
    config: ConfigFile = None,
    set_: SetPairs = None,
    write_config: Optional[Path] = typer.Option(
        None, "--write-config", help="Also write a Serve config file for `serve deploy` here."
    ),
) -> None:
    """Serve a model behind an OpenAI-compatible API until interrupted (Ctrl-C or SIGTERM)."""
    from longcot.serve.backends import backend_for
    from longcot.serve.config import ServeConfig
    from longcot.serve.server import serve_forever

    cfg: ServeConfig = stage_config(ServeConfig, "serve", config, overrides(set_, {
        "model": model, "adapter": adapter, "host": host, "port": port, "api_key_env": api_key_env,
        "backend": backend, "served_model_name": served_model_name,
    }))
    if cfg.model.startswith("@") or (cfg.adapter or "").startswith("@"):
        raise ConfigError("model/adapter '@student' only means something inside a job; give a model and --adapter")
    workdir = cache_dir() / "serve"  # backend vllm merges a local adapter into its base here
    if write_config:
        path = backend_for(cfg, workdir).write_serve_config(write_config)
        out.print(f"Serve config written to {path}")

    def ready(endpoint) -> None:
        out.print(f"[green]serving[/] {cfg.model_id()} at {endpoint.base_url}  (Ctrl-C or SIGTERM stops it)", highlight=False)

    serve_forever(cfg, workdir=workdir, on_ready=ready)
    out.print("stopped")
