"""Issue 20, phase 1, without a pilot: where a run ran is stored (revision 0008) and shown in
words, what a pilot asks Ray for, and an unreachable Ray address refused before any run is
created (loopback only: part of the fast subset)."""
from __future__ import annotations

import shutil
from pathlib import Path

from engine.cli.main import main
from engine.jobs.cluster import free_port
from engine.jobs.node import node_text, this_node
from engine.jobs.ray_executor import pilot_resources
from engine.specs.pilot import PilotSpec, VariantSpec, VllmOptions
from engine.store import migrate
from engine.store.store import Store

STORES = Path(__file__).parent / "data" / "stores"


def test_a_0006_store_gains_the_node_column_and_old_runs_have_none(tmp_path) -> None:
    target = tmp_path / "h100.db"
    shutil.copyfile(STORES / "h100-0006.db", target)
    store = Store(f"sqlite:///{target}")
    assert migrate.current_revision(store.engine) == migrate.HEAD == "0008"
    run = store.list_runs()[0]
    assert store.get_run_node(run.id) is None  # stored before: not recorded
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


def test_a_pilot_asks_for_its_largest_cuda_variant_in_gpus_else_one_cpu() -> None:
    cpu = PilotSpec(workload_id=1, variants=[VariantSpec(name="b", device="cpu")])
    assert pilot_resources(cpu, cluster_gpus=8) == {"num_cpus": 1.0, "num_gpus": 0.0}
    auto = PilotSpec(workload_id=1, variants=[VariantSpec(name="b")])
    assert pilot_resources(auto, cluster_gpus=0)["num_gpus"] == 0  # no GPU in the cluster
    assert pilot_resources(auto, cluster_gpus=1)["num_gpus"] == 1
    tp = PilotSpec(workload_id=1, variants=[
        VariantSpec(name="b", device="cuda"),
        VariantSpec(name="tp2", device="cuda", backend="vllm",
                    vllm=VllmOptions(tensor_parallel_size=2))])
    assert pilot_resources(tp, cluster_gpus=4) == {"num_cpus": 1.0, "num_gpus": 2.0}


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
    # --ray-address belongs to --detach; a foreground pilot refuses it
    assert main(pilot[:-1] + ["--ray-address", address]) == 2
    assert "add --detach" in capsys.readouterr().err
