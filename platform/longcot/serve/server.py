"""Running an endpoint: start it on Ray Serve, wait until it answers, stop it cleanly.

``Endpoint`` owns what it started and nothing else: on a local Ray it started itself it shuts Serve and
Ray down; on a local Ray an earlier stage started it shuts Serve down and leaves Ray; on a shared
cluster (``RAY_ADDRESS``) it deletes only its own application. ``serve_forever`` is ``longcot serve``:
in the foreground until SIGINT or SIGTERM, then the same clean stop.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

import httpx

from longcot.errors import ConfigError, ResourceError
from longcot.serve.backends import ServeBackend, backend_for
from longcot.serve.config import ServeConfig
from longcot.settings import RayConfig

log = logging.getLogger("longcot.serve")
PROXY_WAIT_S = 120.0  # after the replicas are up, how long the HTTP proxy may take to answer


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


class Endpoint:
    """One OpenAI-compatible endpoint on Ray Serve. Use as a context manager, or ``start``/``stop``."""

    def __init__(self, config: ServeConfig, *, ray: RayConfig | None = None, workdir: str | Path | None = None):
        self.config = config
        self.ray_config = ray or RayConfig()
        self.backend: ServeBackend = backend_for(config, workdir)
        self._owns_ray = self._owns_serve = self._running = self._connected = False

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # where a client on this machine reaches a proxy listening everywhere
        return f"http://{host}:{self.config.port}"

    @property
    def base_url(self) -> str:
        """What OpenAI clients take as ``base_url``."""
        return self.url + "/v1"

    def connect(self) -> "Endpoint":
        """Connect to (or start) Ray; ``start`` does this itself when it has not been done."""
        import ray

        from longcot.cluster import connect

        if self._connected:
            return self
        self.backend.validate()
        shared = bool(self.ray_config.address or os.environ.get("RAY_ADDRESS"))
        if not shared:
            _check_port_free(self.config.host, self.config.port)
        self._owns_ray = not ray.is_initialized() and not shared
        self._owns_serve = not shared
        connect(self.ray_config)
        self._connected = True
        return self

    def start(self) -> "Endpoint":
        """Deploy and wait until the endpoint answers (``serve.run`` itself waits for healthy replicas)."""
        from ray import serve

        try:
            self.connect()
            self.backend.check()
            serve.start(http_options={"host": self.config.host, "port": self.config.port},
                        proxy_location="HeadOnly")
            try:
                serve.run(self.backend.application(), name=self.config.app_name, route_prefix="/")
            except RuntimeError as exc:  # Serve gave up on the replicas (their constructor kept failing)
                raise ResourceError(f"the {self.backend.name} endpoint failed to start: {exc}") from None
            self._running = True
            self._wait_until_up(PROXY_WAIT_S)
        except BaseException:
            self.stop()
            raise
        log.info("endpoint %s serving %s", self.base_url, self.config.model_id())
        return self

    def _wait_until_up(self, timeout_s: float) -> None:
        """The proxy may still be binding its port when ``serve.run`` returns."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(self.url + "/-/routes", timeout=5.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ResourceError(
                    f"the application is running but nothing answers at {self.url} after {timeout_s:.0f}s; "
                    "if Serve was already running on this cluster, it kept its own HTTP host/port"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        """Delete the application; shut Serve and Ray down where this endpoint started them."""
        import ray
        from ray import serve

        try:
            if ray.is_initialized():
                if self._owns_serve:
                    serve.shutdown()
                elif self._running:
                    serve.delete(self.config.app_name)
        finally:
            self._running = False
            if self._owns_ray and ray.is_initialized():
                ray.shutdown()
            self._owns_ray = self._connected = False

    def __enter__(self) -> "Endpoint":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve_forever(config: ServeConfig, *, ray: RayConfig | None = None, workdir: str | Path | None = None,
                  on_ready) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (``on_ready(endpoint)`` is called once it answers)."""

    def interrupt(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    endpoint = Endpoint(config, ray=ray, workdir=workdir)
    endpoint.connect()
    # after ray.init: Ray's core worker installs its own SIGTERM handler (dump a stack, abort), which
    # would skip the clean-up; these replace it
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        endpoint.start()
        on_ready(endpoint)
        while True:
            time.sleep(3600)
    except Interrupted as why:
        log.info("%s: shutting the endpoint down", why)
    finally:
        # a second signal during the clean-up must not cut it short and leave processes behind
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            endpoint.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
