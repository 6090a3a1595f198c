"""Issue 20, phase 1, without a pilot: where a run ran is stored (revision 0008) and shown in
words, what a pilot asks Ray for, and an unreachable Ray address refused before any run is
created (loopback only: part of the fast subset)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from engine.cli.main import main
from engine.jobs.cluster import free_port
from engine.jobs.node import node_text, this_node
from engine.jobs.ray_executor import asked, pilot_resources
from engine.specs.pilot import PilotSpec, VariantSpec, VllmOptions
from engine.store import migrate
from engine.store.store import Store

STORES = Path(__file__).parent / "data" / "stores"


def test_a_0006_store_gains_the_node_column_and_old_runs_have_none(tmp_path) -> None:
    target = tmp_path / "h100.db"
    shutil.copyfile(STORES / "h100-0006.db", target)
    store = Store(f"sqlite:///{target}")
    assert migrate.current_revision(store.engine) == migrate.HEAD == "0011"
    run = store.list_runs()[0]
    assert run.progress is None  # stored before revision 0011: nothing said
    assert store.get_run_node(run.id) is None  # stored before: not recorded
    assert run.queued_at is None and not run.queued  # run in a process, never queued
    store.set_run_node(run.id, {"host": "gpu-1", "gpu_count": 1,
                                "gpu_name": "NVIDIA H100 80GB HBM3", "ray_node_id": "ab" * 28})
    assert store.get_run_node(run.id)["gpu_name"] == "NVIDIA H100 80GB HBM3"
    store.engine.dispose()


def test_the_node_in_words() -> None:
    assert node_text({"host": "box", "gpu_count": 0, "gpu_name": None}) == "box (no GPU)"
    assert node_text({"host": "gpu-1", "gpu_count": 2, "gpu_name": "NVIDIA H100 80GB HBM3",
                      "ray_node_id": "0123456789abcdef"}) == \
        "gpu-1: 2 x NVIDIA H100 80GB HBM3, Ray node 0123456789ab"
    assert node_text(None).startswith("not recorded")
    here = this_node()
    assert here["host"] and "ray_node_id" not in here
    assert (here["gpu_count"] == 0) == (here["gpu_name"] is None)


def test_a_pilot_asks_for_its_largest_cuda_variant_in_gpus_else_a_whole_node() -> None:
    cpu = PilotSpec(workload_id=1, variants=[VariantSpec(name="b", device="cpu")])
    assert pilot_resources(cpu, cluster_gpus=8) == {"num_cpus": 1.0, "num_gpus": 0.0}
    # measured on the CPU: the largest node's CPUs, so no other pilot shares its cores
    assert pilot_resources(cpu, cluster_gpus=8, node_cpus=16) == {"num_cpus": 16.0,
                                                                  "num_gpus": 0.0}
    assert asked({"num_cpus": 2.0, "num_gpus": 0.0}).startswith("2 CPUs (a whole node")
    assert asked({"num_cpus": 1.0, "num_gpus": 2.0}) == "2 GPUs"
    auto = PilotSpec(workload_id=1, variants=[VariantSpec(name="b")])
    assert pilot_resources(auto, cluster_gpus=0)["num_gpus"] == 0  # no GPU in the cluster
    assert pilot_resources(auto, cluster_gpus=1)["num_gpus"] == 1
    tp = PilotSpec(workload_id=1, variants=[
        VariantSpec(name="b", device="cuda"),
        VariantSpec(name="tp2", device="cuda", backend="vllm",
                    vllm=VllmOptions(tensor_parallel_size=2))])
    assert pilot_resources(tp, cluster_gpus=4, node_cpus=16) == {"num_cpus": 1.0,
                                                                 "num_gpus": 2.0}


def test_an_unreachable_ray_address_is_one_clear_error_and_creates_no_run(
        settings, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    log = tmp_path / "w.jsonl"
    log.write_text("".join(f'{{"prompt": "item {i}"}}\n' for i in range(3)))
    assert main(["ingest", str(log)]) == 0
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    pilot = ["pilot", "--workload", "1", "--model", "random:tiny-llama", "--price", "1",
             "--detach"]
    capsys.readouterr()
    assert main([*pilot, "--ray-address", address]) == 2
    err = capsys.readouterr().err
    assert f"Ray is not reachable at {address}" in err and "ray start --head" in err
    assert "unset ROILAB_RAY_ADDRESS" in err and "Traceback" not in err
    monkeypatch.setenv("ROILAB_RAY_ADDRESS", address)  # the environment variable, the same
    assert main(pilot) == 2 and f"not reachable at {address}" in capsys.readouterr().err
    assert Store(settings.resolved_db_url()).list_runs() == []  # nothing half-created
    # a pilot followed here on a named cluster: the same error, nothing created either
    assert main(pilot[:-1] + ["--ray-address", address]) == 2
    err = capsys.readouterr().err
    assert f"not reachable at {address}" in err
    assert "add --in-process" in err  # run without --detach, it can also run without Ray
    assert Store(settings.resolved_db_url()).list_runs() == []


def test_queued_runs_have_their_place_in_line_and_a_refused_submit_undoes_the_queueing(
        store) -> None:
    """Revision 0009: a run handed to Ray is pending with a queued_at and no owner; its
    place is its rank by queued_at among such runs (engine.jobs.queue). Its variants not
    done are pending again; Ray refusing it puts back the run and variants as they were."""
    from engine.core.domain import Status
    from engine.ingest.logs import parse_log
    from engine.jobs.queue import job_state, ordinal, queue_places

    raw = b'{"prompt": "hi"}\n'
    w = store.add_workload("w", "w.jsonl", raw, parse_log(raw, "w.jsonl"))
    ids = [store.create_run(w.id, f"r{i}", {}, [{"name": "b"}, {"name": "v"}]).id
           for i in range(3)]
    assert queue_places(store.list_runs()) == {}  # created, never handed to Ray
    store.requeue_run(ids[2])
    store.requeue_run(ids[0])
    runs = {r.id: r for r in store.list_runs()}
    places = queue_places(runs.values())
    assert places == {ids[2]: 1, ids[0]: 2}
    assert job_state(runs[ids[0]], places) == "queued (2nd in line)"
    assert job_state(runs[ids[1]], places) == "pending"
    store.claim_run(ids[2], 4242, "box")  # a worker picked it up
    store.set_run_status(ids[2], Status.RUNNING)
    store.set_variant_status(runs[ids[2]].variants[0].id, Status.DONE)
    runs = {r.id: r for r in store.list_runs()}
    assert queue_places(runs.values()) == {ids[0]: 1}
    assert job_state(runs[ids[2]], {}) == "running (1 of 2 variants done)"
    # where the pilot is, as its process says: kept in memory by the pilot's thread, stored
    # by the heartbeat's, shown to whoever follows the run from the store
    from engine.core.domain import RunProgress
    from engine.pilot.liveness import Heartbeat

    with Heartbeat(store, ids[2], every_s=0.05) as beat:
        beat.record(RunProgress(0.75, "v", "pass 2: generating 1-2 of 2"))
        deadline = time.monotonic() + 10
        while store.get_run(ids[2]).progress is None and time.monotonic() < deadline:
            time.sleep(0.05)
    said = store.get_run(ids[2])
    assert said.progress == RunProgress(0.75, "v", "pass 2: generating 1-2 of 2")
    assert job_state(said, {}) == "running (1 of 2 variants done; v: pass 2: generating 1-2 of 2)"
    store.claim_run(ids[2], 4243, "box")  # resumed by another process: its word is not yet said
    assert store.get_run(ids[2]).progress is None
    store.claim_run(ids[2], 4242, "box")
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]

    # a stopped run handed back: its failed variant is pending (to be run), the done one kept
    run = store.get_run(ids[1])
    store.set_variant_status(run.variants[0].id, Status.DONE)
    store.set_variant_status(run.variants[1].id, Status.FAILED, "Interrupted: SIGKILL")
    store.set_run_status(ids[1], Status.INTERRUPTED, "Interrupted: SIGKILL")
    before = store.get_run(ids[1])
    store.requeue_run(ids[1])
    queued = store.get_run(ids[1])
    assert queued.queued and [v.status for v in queued.variants] == [Status.DONE, Status.PENDING]
    store.unqueue_run(ids[1], before.status, before.error, before.variants)  # Ray said no
    back = store.get_run(ids[1])
    assert (back.status, back.error, back.queued) == (Status.INTERRUPTED,
                                                      "Interrupted: SIGKILL", False)
    assert [(v.status, v.error) for v in back.variants] == \
        [(Status.DONE, None), (Status.FAILED, "Interrupted: SIGKILL")]


def test_a_pilot_priced_as_the_submitters_device_is_priced_as_the_node_that_runs_it(
        store) -> None:
    """Issue 20: a pilot priced as the device detected where it was submitted (a laptop, the
    dashboard's server) is priced, once a node picks it up, as that node's device, and the
    run's stored spec says so (show, pages and PDF read it). A price the user chose stands:
    only a detected one is re-detected. Here the node is this machine; the submitter is one
    that detected an 8-vCPU instance (what its spec stored)."""
    from engine.ingest.logs import parse_log
    from engine.jobs.ray_executor import price_on_node
    from engine.pilot.detect import detect_hardware, price_pilot

    raw = b'{"prompt": "hi"}\n'
    w = store.add_workload("w", "w.jsonl", raw, parse_log(raw, "w.jsonl"))
    here = detect_hardware("cpu", store.hardware_catalog()).key
    laptop = next(k for k in ("cpu-c7i-2xlarge", "cpu-c7i-large")
                  if k != here)
    spec = PilotSpec.model_validate({"name": "p", "workload_id": w.id,
                                     "variants": [{"name": "baseline", "device": "cpu"}],
                                     "cost": {"hardware": laptop}})
    assert price_pilot(spec, store, explicit=False).detected is (here is not None)
    assert price_pilot(spec, store, explicit=True).detected is False  # chosen: kept as is
    run = store.create_run(w.id, "p", spec.model_dump(mode="json"), [{"name": "baseline"}])

    priced = price_on_node(spec, store, run.id)
    stored = PilotSpec.from_run(store.get_run(run.id)).cost.hardware
    if here is None:  # this machine matches no catalog entry: the submitter's price stands
        assert priced.cost.hardware == stored == laptop
    else:
        assert priced.cost.hardware == stored == here != laptop
