"""One executor for pilots: ``submit`` runs ``run_pilot`` for an already created run on Ray.

The pilot runs as a Ray task named ``pilot-run-<id>-store-<hash of the DB URL>``, submitted by the cluster's detached
``roilab-dispatcher-3`` actor (namespace ``roilab``) rather than by the CLI itself: a task dies
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

import logging
import os
from dataclasses import dataclass
from typing import Any

from engine.core.domain import Status
from engine.core.settings import Settings
from engine.jobs.cluster import ClusterError, Connection, connect
from engine.specs.pilot import PilotSpec

_ENV_PREFIXES = ("ROILAB_", "HF_", "VLLM_", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_",
                 "OMP_NUM_THREADS")
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


def pilot_resources(spec: PilotSpec, cluster_gpus: float = 0.0,
                    node_cpus: float = 1.0) -> dict[str, float]:
    """What the pilot asks Ray for: ``{"num_cpus": C, "num_gpus": N}``, N the largest device
    count of its variants on CUDA (0 when none is). A variant on ``device: auto`` counts as
    CUDA when the cluster has GPUs (it would pick one there); an endpoint variant runs
    nowhere in the cluster. C is 1 for a pilot on GPUs; a pilot measured on the CPU asks for
    ``node_cpus``, the CPUs of the cluster's largest node: its figures need the whole machine
    (a second pilot beside it would share the cores and slow both), so CPU pilots queue
    per node instead of running side by side."""
    from engine.economics.devices import devices_of

    def on_cuda(v) -> bool:
        if v.backend == "endpoint":
            return False
        return v.device == "cuda" or (v.device == "auto" and cluster_gpus > 0)

    gpus = max((devices_of(v.model_dump(mode="json")) for v in spec.variants if on_cuda(v)),
               default=0)
    return {"num_cpus": 1.0 if gpus else float(max(node_cpus, 1.0)), "num_gpus": float(gpus)}


def asked(resources: dict[str, float]) -> str:
    """What a pilot asked Ray for, in words: "1 GPU", "2 CPUs"."""
    if resources.get("num_gpus"):
        n = resources["num_gpus"]
        return f"{n:g} GPU{'s' if n != 1 else ''}"
    n = resources.get("num_cpus", 1)
    return f"{n:g} CPU{'s' if n != 1 else ''} (a whole node: a CPU measurement needs the machine)"


def _largest_node_cpus() -> float:
    import ray

    return max((n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")),
               default=1.0)


def connect_for(spec: PilotSpec, settings: Settings,
                address: str | None = None) -> tuple[Connection, dict[str, float]]:
    """Connect to Ray and check the cluster can ever give the pilot what it needs, before
    the run is created: ClusterError naming the address and the fix otherwise."""
    import ray

    conn = connect(settings, address)
    total = ray.cluster_resources()
    need = pilot_resources(spec, total.get("GPU", 0.0), _largest_node_cpus())
    if need["num_gpus"] > total.get("GPU", 0.0):
        raise ClusterError(f"The pilot needs {need['num_gpus']:g} GPU(s) (its largest variant "
                           f"on CUDA) and the Ray cluster at {conn.address} has "
                           f"{total.get('GPU', 0.0):g}; add a GPU node (`ray start --address "
                           f"{conn.address}` on it) or run the variants on the CPU. No run "
                           "was created.")
    return conn, need


def submit(spec: PilotSpec, run_id: int, settings: Settings, address: str | None = None,
           resources: dict[str, float] | None = None, store=None,
           reprice: bool = False) -> Submitted:
    """Submit the pilot of the created run ``run_id`` (engine.pilot.runner.create_pilot_run)
    to Ray and return once Ray holds it (queued or running); the run's status and figures
    arrive in the store. A resumed run (its finished variants kept) is submitted the same
    way. Connects first (see ``connect_for``) when the caller has not. ``reprice``: the
    spec is priced as the device detected where it was submitted; the node that runs it
    detects its own and prices the run as that (``price_on_node``).

    The run is stored queued (pending, ``queued_at`` now, no owner) before Ray gets it, so a
    worker that starts it at once is not overwritten; if Ray does not take it, a new run is
    stored failed with the reason and a resumed one goes back to what it was."""
    import ray

    from engine.store.store import Store

    conn, need = connect_for(spec, settings, address)
    need = resources or need
    env = {k: v for k, v in os.environ.items()
           if k.startswith(_ENV_PREFIXES) and k not in _NOT_PASSED}
    # Ray sets OMP_NUM_THREADS to 1 in its workers: torch would measure a CPU pilot on one
    # core of the machine it is priced as. The pilot's own CPUs instead (or the caller's).
    env.setdefault("OMP_NUM_THREADS", str(int(need["num_cpus"])))
    store = store or Store(settings.resolved_db_url())
    before = store.get_run(run_id)
    store.requeue_run(run_id)
    try:
        accepted = ray.get(_dispatcher().submit.remote(
            job_key(settings, run_id), spec.model_dump(mode="json"), run_id,
            settings.model_dump(mode="json", exclude=set(_NOT_PASSED_SETTINGS)), need, env,
            reprice),
            timeout=120)
        if not accepted:
            raise ClusterError(f"Run {run_id} is already on Ray at {conn.address} (queued or "
                               f"running); follow it with `roilab show {run_id}`.")
    except BaseException as exc:
        if before.status == Status.PENDING:  # never ran: it cannot run now either
            store.unqueue_run(run_id, Status.FAILED, f"Not submitted to Ray: {exc}")
        else:
            store.unqueue_run(run_id, before.status, before.error, before.variants)
        raise
    return Submitted(run_id, conn.address, conn.local, need, task_name(settings, run_id))


def submit_new(spec: PilotSpec, store, settings: Settings, address: str | None = None,
               reprice: bool = False):
    """Create the pilot's run and submit it: Ray reached (and able to give what the pilot
    asks) before the run is created, so an unreachable cluster leaves nothing behind.
    ``(run, Submitted)``, the run as stored once queued. ``reprice``: see ``submit``."""
    from engine.pilot.runner import create_pilot_run

    _, need = connect_for(spec, settings, address)
    run = create_pilot_run(spec, store)  # refuses an unknown or empty workload
    done = submit(spec, run.id, settings, address, need, store, reprice)
    return store.get_run(run.id), done


def submit_resume(run_id: int, store, settings: Settings, address: str | None = None):
    """Submit the unfinished variants of a stopped run (as a foreground resume checks it:
    SpecError for a run still pending or running, or finished with nothing to resume); only
    the variants not done run. Submitted."""
    from engine.core.errors import SpecError
    from engine.pilot.liveness import reap_dead_runs
    from engine.pilot.runner import RESUMABLE

    reap_dead_runs(store)  # a run whose process died is interrupted, so resumable at once
    run = store.get_run(run_id)
    if run.status not in RESUMABLE:
        raise SpecError(f"Run {run.id} is {run.status}; only an {', '.join(RESUMABLE)} run can "
                        "be resumed (a pending or running one is still going: `roilab show "
                        f"{run.id}`).")
    spec = PilotSpec.from_run(run)
    _, need = connect_for(spec, settings, address)
    return submit(spec, run.id, settings, address, need, store)  # queued; as it was if refused


def cancel(run_id: int, settings: Settings, address: str | None = None,
           grace_s: float = 30.0) -> bool:
    """Cancel the pilot task of ``run_id`` if Ray holds it; True when it did. A queued task
    leaves the queue; a running one gets KeyboardInterrupt (run_pilot stores the run
    interrupted, finished variants kept, engines closed) and is killed if it has not ended
    after ``grace_s``. Returns once the task has ended. Never starts a local head: with none
    running there is no task to cancel (False)."""
    import ray

    try:
        connect(settings, address, start=False)
    except ClusterError:
        return False
    return ray.get(_dispatcher().cancel.remote(job_key(settings, run_id), grace_s),
                   timeout=grace_s + 60)


def cancel_pilot(run_id: int, store, settings: Settings, address: str | None = None):
    """Cancel a run wherever it is: its Ray task cancelled first when Ray holds one (queued
    or running), then the run and its unfinished variants stored cancelled, finished results
    kept (engine.pilot.runner.cancel_run, which refuses a finished run, and a run a live
    foreground process still runs). The cancelled Run."""
    from engine.pilot.runner import cancel_run

    ended = False
    if store.get_run(run_id).status in (Status.PENDING, Status.RUNNING):
        ended = cancel(run_id, settings, address)
    return cancel_run(run_id, store, task_ended=ended)


def active_runs(settings: Settings, address: str | None = None,
                start: bool = True) -> list[int]:
    """The runs whose pilot task Ray holds now (queued or running), as the cluster's
    dispatcher knows them; connects first when this process has not (``start=False``:
    ClusterError rather than starting a local head)."""
    import ray

    connect(settings, address, start=start)
    return ray.get(_dispatcher().active.remote(store_key(settings)), timeout=30)


def store_key(settings: Settings) -> str:
    """Which store a job belongs to: one cluster may serve several stores (teams, a test
    per data dir), each numbering its runs from 1."""
    import hashlib

    return hashlib.sha1(settings.resolved_db_url().encode()).hexdigest()[:10]


def job_key(settings: Settings, run_id: int) -> str:
    return f"{store_key(settings)}-{run_id}"


def task_name(settings: Settings, run_id: int) -> str:
    """The Ray task's name (in Ray's own tools and the worker's process title)."""
    return f"pilot-run-{run_id}-store-{store_key(settings)}"


# numbered: its methods changed (a head still running the older actor keeps that one)
DISPATCHER = "roilab-dispatcher-3"


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

        self._tasks: dict[str, Any] = {}  # job_key (store and run) -> its task
        self._lock = threading.Lock()  # its methods run in up to max_concurrency threads

    def submit(self, key: str, spec_json: dict[str, Any], run_id: int,
               settings_json: dict[str, Any], need: dict[str, float],
               env: dict[str, str], reprice: bool = False) -> bool:
        """Queue the pilot of ``run_id`` (``key``: job_key); False when it is queued or
        running already."""
        import ray

        with self._lock:
            self._forget_finished()
            if key in self._tasks:
                return False
            name = task_name(Settings.model_validate(settings_json), run_id)
            # max_calls=1: the worker process ends with its pilot. Ray reuses a worker for
            # the next task of the same shape otherwise (GPU asks given in .options() do
            # not turn that off), and the next pilot found the last one's vLLM engines
            # still alive in it, asleep in GPU memory, and "reused" them (seen on an H100:
            # its start-up shown as "reused", ~6 GiB held between the pilots).
            task = ray.remote(max_calls=1)(run_pilot_task).options(
                name=name, max_retries=0, runtime_env={"env_vars": env}, **need)
            self._tasks[key] = task.remote(spec_json, run_id, settings_json, reprice)
            return True

    def cancel(self, key: str, grace_s: float) -> bool:
        """Cancel the job's task (see ``cancel``); True when there was one."""
        import ray

        with self._lock:
            task = self._tasks.pop(key, None)
        if task is None:
            return False
        ray.cancel(task)  # queued: dropped; running: KeyboardInterrupt in the pilot
        done, _ = ray.wait([task], timeout=grace_s)
        if not done:
            ray.cancel(task, force=True)  # the worker process is killed
            ray.wait([task], timeout=30)
        return True

    def active(self, store: str) -> list[int]:
        """The runs of the store ``store`` (store_key) whose pilot task is queued or
        running."""
        with self._lock:
            self._forget_finished()
            return sorted(int(k.rsplit("-", 1)[1]) for k in self._tasks
                          if k.rsplit("-", 1)[0] == store)

    def _forget_finished(self) -> None:
        import ray

        if self._tasks:
            done, _ = ray.wait(list(self._tasks.values()), num_returns=len(self._tasks),
                               timeout=0)
            self._tasks = {r: t for r, t in self._tasks.items() if t not in done}


def run_pilot_task(spec_json: dict[str, Any], run_id: int, settings_json: dict[str, Any],
                   reprice: bool = False) -> str:
    """The Ray task: run the pilot of run ``run_id`` in this worker; its final status.
    ``reprice``: priced as the device detected where it was submitted, so priced here as
    this node's (``price_on_node``) before anything is measured."""
    import signal

    import ray

    from engine.jobs.node import this_node
    from engine.pilot.runner import run_pilot
    from engine.pilot.stops import stops_kept
    from engine.store.store import Store

    settings = Settings.model_validate(settings_json)
    store = Store(settings.resolved_db_url())  # a StorageError fails the task; the run stays
    # pending, and `roilab cancel` ends it
    store.set_run_node(run_id, this_node(ray_node_id=ray.get_runtime_context().get_node_id()))
    spec = PilotSpec.model_validate(spec_json)
    if reprice:
        spec = price_on_node(spec, store, run_id)
    # ray.cancel interrupts the task through Ray's SIGINT handler, kept: a cancel that Python
    # dropped is raised again at the pilot's next progress (engine.pilot.stops)
    with _library_log(settings, run_id), stops_kept((signal.SIGINT,)) as stops:
        run = run_pilot(spec, store, settings, on_progress=stops.again, run_id=run_id)
    return str(run.status)


def price_on_node(spec: PilotSpec, store, run_id: int) -> PilotSpec:
    """A pilot priced as the device detected where it was submitted (a laptop, the
    dashboard's server) is priced as the device of the node that runs it: detected here, in
    the task, and stored with the run, so `roilab show`, the pages and the PDF price what
    measured it. Where this node detects nothing in the catalog, the submitter's price
    stands (its line said which device that was)."""
    from engine.core.errors import SpecError
    from engine.pilot.detect import price_pilot

    try:
        priced = price_pilot(spec, store, explicit=False)
    except SpecError:
        return spec
    key = priced.spec.cost.hardware
    if key != spec.cost.hardware:
        store.set_run_hardware(run_id, key)
        logging.getLogger(__name__).warning("run %s: priced as %s, this node's device (%s), "
                                            "not %s, the submitter's", run_id, key,
                                            priced.line, spec.cost.hardware)
    return priced.spec


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
