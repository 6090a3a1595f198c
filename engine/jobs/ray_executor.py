"""One executor for pilots: ``submit`` runs ``run_pilot`` for an already created run on Ray.

The pilot runs as a Ray task named ``pilot-run-<id>``, submitted by the cluster's detached
``roilab-dispatcher`` actor (namespace ``roilab``) rather than by the CLI itself: a task dies
with the process that submitted it, and ``roilab pilot --detach`` returns at once. What a
pilot asks Ray for (``pilot_resources``): the largest
device count (engine.economics.devices.devices_of) of its variants that run on CUDA, as
GPUs, and one CPU; so two pilots needing the box's one GPU queue in Ray instead of both
loading engines onto it. The task opens the store from the settings' DB URL (a SQLite file
every node can reach, or a shared server), records where it runs (engine.jobs.node), runs
the pilot (which stores its heartbeat, owner and passes as in the foreground) and returns
the run's final status. ROILAB_*, HF_*, VLLM_* and TOKENIZERS_PARALLELISM of the submitting
process go with it, so the pilot measures as it would have here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from engine.core.settings import Settings
from engine.jobs.cluster import ClusterError, Connection, connect
from engine.specs.pilot import PilotSpec

_ENV_PREFIXES = ("ROILAB_", "HF_", "VLLM_", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_")
# secrets a pilot never needs stay with the submitting process
_NOT_PASSED = ("ROILAB_DASHBOARD_PASSWORD",)
_NOT_PASSED_SETTINGS = ("dashboard_password",)


@dataclass(frozen=True)
class Submitted:
    run_id: int
    address: str  # the cluster it went to ("127.0.0.1:PORT" for the local head)
    local: bool
    resources: dict[str, float]
    task_name: str


def pilot_resources(spec: PilotSpec, cluster_gpus: float = 0.0) -> dict[str, float]:
    """What the pilot asks Ray for: ``{"num_cpus": 1, "num_gpus": N}``, N the largest device
    count of its variants on CUDA (0 when none is). A variant on ``device: auto`` counts as
    CUDA when the cluster has GPUs (it would pick one there); an endpoint variant runs
    nowhere in the cluster."""
    from engine.economics.devices import devices_of

    def on_cuda(v) -> bool:
        if v.backend == "endpoint":
            return False
        return v.device == "cuda" or (v.device == "auto" and cluster_gpus > 0)

    gpus = max((devices_of(v.model_dump(mode="json")) for v in spec.variants if on_cuda(v)),
               default=0)
    return {"num_cpus": 1.0, "num_gpus": float(gpus)}


def connect_for(spec: PilotSpec, settings: Settings,
                address: str | None = None) -> tuple[Connection, dict[str, float]]:
    """Connect to Ray and check the cluster can ever give the pilot what it needs, before
    the run is created: ClusterError naming the address and the fix otherwise."""
    import ray

    conn = connect(settings, address)
    total = ray.cluster_resources()
    need = pilot_resources(spec, total.get("GPU", 0.0))
    if need["num_gpus"] > total.get("GPU", 0.0):
        raise ClusterError(f"The pilot needs {need['num_gpus']:g} GPU(s) (its largest variant "
                           f"on CUDA) and the Ray cluster at {conn.address} has "
                           f"{total.get('GPU', 0.0):g}; add a GPU node (`ray start --address "
                           f"{conn.address}` on it) or run the variants on the CPU. No run "
                           "was created.")
    return conn, need


def submit(spec: PilotSpec, run_id: int, settings: Settings, address: str | None = None,
           resources: dict[str, float] | None = None) -> Submitted:
    """Submit the pilot of the created run ``run_id`` (engine.pilot.runner.create_pilot_run)
    to Ray and return once Ray holds it (queued or running); the run's status and figures
    arrive in the store. A resumed run (its finished variants kept) is submitted the same
    way. Connects first (see ``connect_for``) when the caller has not."""
    import ray

    conn, need = connect_for(spec, settings, address)
    need = resources or need
    env = {k: v for k, v in os.environ.items()
           if k.startswith(_ENV_PREFIXES) and k not in _NOT_PASSED}
    accepted = ray.get(_dispatcher().submit.remote(
        spec.model_dump(mode="json"), run_id,
        settings.model_dump(mode="json", exclude=set(_NOT_PASSED_SETTINGS)), need, env),
        timeout=120)
    if not accepted:
        raise ClusterError(f"Run {run_id} is already on Ray at {conn.address} (queued or "
                           f"running); follow it with `roilab show {run_id}`.")
    return Submitted(run_id, conn.address, conn.local, need, task_name(run_id))


def active_runs(settings: Settings, address: str | None = None) -> list[int]:
    """The runs whose pilot task Ray holds now (queued or running), as the cluster's
    dispatcher knows them; connects first when this process has not."""
    import ray

    connect(settings, address)
    return ray.get(_dispatcher().active.remote(), timeout=30)


def task_name(run_id: int) -> str:
    return f"pilot-run-{run_id}"


DISPATCHER = "roilab-dispatcher"


def _dispatcher():
    """The cluster's one dispatcher actor, created on first use. It owns the pilot tasks:
    a task belongs to the process that submitted it and dies with it, and the CLI that
    submits a detached pilot exits at once; a detached actor lives as long as the cluster.
    It asks for no CPU and sits on the node this process is connected to (the head)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(Dispatcher).options(
        name=DISPATCHER, namespace="roilab", lifetime="detached", get_if_exists=True,
        num_cpus=0, max_concurrency=4, scheduling_strategy=here).remote()


class Dispatcher:
    """Submits each pilot as a Ray task with the resources it needs and keeps its handle
    (so the task outlives the CLI that asked, and phase 2 can cancel it)."""

    def __init__(self) -> None:
        import threading

        self._tasks: dict[int, Any] = {}
        self._lock = threading.Lock()  # its methods run in up to max_concurrency threads

    def submit(self, spec_json: dict[str, Any], run_id: int, settings_json: dict[str, Any],
               need: dict[str, float], env: dict[str, str]) -> bool:
        """Queue the pilot of ``run_id``; False when it is queued or running already."""
        import ray

        with self._lock:
            self._forget_finished()
            if run_id in self._tasks:
                return False
            task = ray.remote(run_pilot_task).options(
                name=task_name(run_id), max_retries=0, runtime_env={"env_vars": env}, **need)
            self._tasks[run_id] = task.remote(spec_json, run_id, settings_json)
            return True

    def active(self) -> list[int]:
        """The runs whose pilot task is queued or running."""
        with self._lock:
            self._forget_finished()
            return sorted(self._tasks)

    def _forget_finished(self) -> None:
        import ray

        if self._tasks:
            done, _ = ray.wait(list(self._tasks.values()), num_returns=len(self._tasks),
                               timeout=0)
            self._tasks = {r: t for r, t in self._tasks.items() if t not in done}


def run_pilot_task(spec_json: dict[str, Any], run_id: int, settings_json: dict[str, Any]) -> str:
    """The Ray task: run the pilot of run ``run_id`` in this worker; its final status."""
    import ray

    from engine.jobs.node import this_node
    from engine.pilot.runner import run_pilot
    from engine.store.store import Store

    settings = Settings.model_validate(settings_json)
    store = Store(settings.resolved_db_url())  # a StorageError fails the task; the run stays
    # pending, and `roilab cancel` ends it
    store.set_run_node(run_id, this_node(ray_node_id=ray.get_runtime_context().get_node_id()))
    with _library_log(settings, run_id):
        run = run_pilot(PilotSpec.model_validate(spec_json), store, settings, run_id=run_id)
    return str(run.status)

def _library_log(settings: Settings, run_id: int):
    """The pilot's library messages to the roilab log of the node it runs on (as the CLI
    sends them), else to Ray's worker log."""
    from contextlib import nullcontext

    if settings.verbose:
        return nullcontext()
    try:
        from engine.core.logfile import library_output_to, open_log

        path = settings.resolved_log_file()
        open_log(path, ignored_folder=settings.log_file is None).close()
        return library_output_to(path, command=f"ray: pilot of run {run_id}")
    except OSError:
        return nullcontext()
