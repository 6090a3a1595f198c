"""Which Ray cluster runs submitted pilots, and the connection to it.

- ``--ray-address`` or ``ROILAB_RAY_ADDRESS`` (``HOST:PORT`` of a head started with ``ray
  start --head``, ``ray://HOST:10001`` for Ray Client / KubeRay, or ``auto``): that cluster.
  Not reachable: one ``ClusterError`` naming the address and the fix, before anything is
  stored.
- Neither: a local head of this machine, started on first use with ``ray start --head``
  (no dashboard, loopback only, its own ports and temp dir) and found again by later
  commands through ``<data dir>/ray/local-head.json``. It is a separate set of processes,
  not a Ray started inside the CLI process, because a detached pilot must outlive the
  command that submitted it (``ray.init()`` without an address tears its instance down when
  the process exits). ``stop_local_head`` stops it by its processes' ids.

Ray's own messages go where the CLI sends library messages (the roilab log), not the
terminal: ``log_to_driver=False``, and ``ray start``'s output is captured and quoted only
when it fails.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import RoilabError
from engine.core.settings import Settings

NAMESPACE = "roilab"
ADDRESS_ENV = "ROILAB_RAY_ADDRESS"
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # pilots pass ids and specs, not tensors, through Ray
_PROBE_TIMEOUT_S = 3.0


class ClusterError(RoilabError):
    """Ray is missing, not reachable, or cannot give a pilot what it asks for."""


@dataclass(frozen=True)
class Connection:
    address: str  # what was connected to, as the user would type it
    local: bool  # the local head roilab started (no address given)


def configured_address(settings: Settings, given: str | None = None) -> str | None:
    """``--ray-address`` if given, else ``ROILAB_RAY_ADDRESS`` (a Settings field once the
    settings object has one; the environment until then), else None: the local head."""
    return given or getattr(settings, "ray_address", None) or os.environ.get(ADDRESS_ENV) or None


def connect(settings: Settings, address: str | None = None, start: bool = True) -> Connection:
    """Connect this process to Ray (once; later calls reuse the connection): the cluster at
    ``address`` (or the configured one), else the local head, started if need be (with
    ``start=False``: ClusterError when none runs). Thread-safe: the dashboard's sessions
    each run in a thread of one process, and a second ray.init would fail."""
    with _connect_lock:
        return _connect(settings, address, start)


def _connect(settings: Settings, address: str | None, start: bool) -> Connection:
    global _connected
    ray = _import_ray()
    given = configured_address(settings, address)
    if ray.is_initialized():
        if _connected is not None and _connected.asked == given and (
                given is not None or _connected.connection.address == _local_address(settings)):
            return _connected.connection
        ray.shutdown()  # another cluster (or data dir's local head) than this process's
    target = given
    if given is None and not start:
        target = _local_address(settings)
        if not (target and _reachable(target)):
            raise ClusterError("No local Ray head runs for this data dir.")
    elif given is None:
        target = ensure_local_head(settings)
    elif given != "auto":
        _probe(given)
    try:
        ray.init(address=target, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors
        raise _unreachable(target or "auto", _first_line(exc)) from None
    _connected = _Connected(given, Connection(target or "auto", given is None))
    return _connected.connection


@dataclass(frozen=True)
class _Connected:
    asked: str | None
    connection: Connection


_connected: _Connected | None = None  # this process's connection, and the address it asked
_connect_lock = threading.Lock()


def disconnect() -> None:
    global _connected
    ray = _import_ray()
    if ray.is_initialized():
        ray.shutdown()
    _connected = None


def ensure_local_head(settings: Settings) -> str:
    """The address of this data dir's local head, started now if none answers."""
    from filelock import FileLock  # a Ray dependency

    state = _state_file(settings)
    state.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(state) + ".lock", timeout=180):  # two commands at once start one head
        address = _local_address(settings)
        if address and _reachable(address):
            return address
        info = start_head(num_cpus=None)
        state.write_text(json.dumps(info))
        return info["address"]


def start_head(num_cpus: int | None = None, resources: dict | None = None,
               temp_dir: str | None = None) -> dict:
    """``ray start --head`` on loopback with free ports and a temp dir of its own (Ray's
    unix sockets need a short path: under /tmp); ``{"address", "temp_dir"}``."""
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="roilab-ray-")
    port = free_port()
    extra = [f"--num-cpus={num_cpus}"] if num_cpus is not None else []
    if resources:
        extra.append(f"--resources={json.dumps(resources)}")
    _ray_start(["--head", f"--port={port}", "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                f"--object-store-memory={LOCAL_OBJECT_STORE_BYTES}", *extra], temp_dir)
    return {"address": f"127.0.0.1:{port}", "temp_dir": temp_dir}


def start_worker_node(address: str, temp_dir: str, num_cpus: int | None = None,
                      resources: dict | None = None) -> None:
    """``ray start --address`` another node of the cluster at ``address`` on this machine."""
    extra = [f"--num-cpus={num_cpus}"] if num_cpus is not None else []
    if resources:
        extra.append(f"--resources={json.dumps(resources)}")
    _ray_start([f"--address={address}", f"--object-store-memory={LOCAL_OBJECT_STORE_BYTES}",
                *extra], temp_dir)


def stop_local_head(settings: Settings) -> bool:
    """Stop this data dir's local head (its processes, by id); False when none ran."""
    state = _state_file(settings)
    if not state.exists():
        return False
    info = json.loads(state.read_text())
    # 3 s, not 10: a head of our own with no pilot on it (`roilab stop-ray` refuses one with
    # pilots); one of its processes outwaits SIGTERM by ~10 s and is killed instead
    stopped = stop_nodes(info["temp_dir"], grace_s=3.0, address=info.get("address"))
    state.unlink(missing_ok=True)
    return stopped > 0


def stop_nodes(temp_dir: str, grace_s: float = 10.0, address: str | None = None) -> int:
    """Stop every Ray process started with ``--temp-dir temp_dir`` (a head, its worker nodes
    and their workers), found by that folder in their command lines: SIGTERM, then SIGKILL
    after ``grace_s``. Never touches another Ray on the machine (``ray stop`` would stop
    them all). Their children go too, and, given the head's ``address``, its Ray Client
    server (``--address=IP:PORT`` with the head's port: it outlived every head before). The
    number of processes signalled."""
    import psutil

    port = address.rsplit(":", 1)[-1] if address else None
    mine = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = proc.info["cmdline"] or ()
            client_server = port is not None and "ray.util.client.server" in cmd and any(
                a.startswith("--address=") and a.endswith(f":{port}") for a in cmd)
            if client_server or any(temp_dir in part for part in cmd):
                mine.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    # and their children: the agents rename themselves (ray::DashboardAgent), so they
    # outlived the head when only the command lines were matched
    for proc in list(mine):
        try:
            mine.extend(proc.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    mine = list({p.pid: p for p in mine if p.pid != os.getpid()}.values())
    for proc in mine:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(mine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> list[str]:
    """The venv's ``ray`` script, else the one on PATH, else ``python -m ray.scripts.scripts``
    (Ray installed with ``pip --target`` has no script on PATH, as on an offline GPU box)."""
    import shutil

    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return [str(beside)]
    on_path = shutil.which("ray")
    return [on_path] if on_path else [sys.executable, "-m", "ray.scripts.scripts"]


def _ray_start(args: list[str], temp_dir: str) -> None:
    """Run ``ray start`` (the venv's) with ports that cannot clash with another Ray here."""
    cmd = [*_ray_cli(), "start", *args,
           "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
           f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
           "--log-style=record", "--log-color=false"]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"Cannot start a local Ray node ({exc}); start one with `ray start "
                           f"--head` and set {ADDRESS_ENV} to its address.") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ClusterError(f"`ray start` failed (exit {done.returncode}): {tail}. Start Ray "
                           f"yourself with `ray start --head` and set {ADDRESS_ENV} to its "
                           "address.")


def _state_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / "ray" / "local-head.json"


def _local_address(settings: Settings) -> str | None:
    try:
        return json.loads(_state_file(settings).read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None


def _host_port(address: str) -> tuple[str, int] | None:
    bare = address.split("://", 1)[-1].rstrip("/")
    host, _, port = bare.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def _reachable(address: str) -> bool:
    hp = _host_port(address)
    if hp is None:
        return False
    try:
        with socket.create_connection(hp, timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _probe(address: str) -> None:
    """Fail fast and clearly where nothing listens at ``address`` (ray.init would retry)."""
    if _host_port(address) is None:
        raise ClusterError(f"{ADDRESS_ENV} / --ray-address {address!r} is not a Ray address; "
                           "give HOST:PORT of a head started with `ray start --head` (port "
                           "6379 by default), ray://HOST:10001, or unset it for a local Ray.")
    if not _reachable(address):
        raise _unreachable(address, "nothing answers there")


def _unreachable(address: str, why: str) -> ClusterError:
    return ClusterError(
        f"Ray is not reachable at {address} ({why}). Start it with `ray start --head` on that "
        f"machine (and `ray start --address {address}` on the others), or unset "
        f"{ADDRESS_ENV} (and leave out --ray-address) to run on a local Ray. No run was "
        "created.")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _import_ray():
    # Ray's tqdm_ray replaces builtins.print with its own the first time this driver prints a
    # cluster message (a worker that died, say); every later print of the process would then
    # reach engine.core.logfile's router from a Ray frame and be sent to the log, not the
    # terminal (`roilab portfolio-pilot`'s lines and roll-up, a dashboard's). Kept off.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError("Ray is not installed: `make ray` (part of `make setup`) installs "
                           "it into the venv without changing any other version.") from None
    return ray
