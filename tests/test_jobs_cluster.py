"""Issue 20, phase 1: a two-node Ray cluster on this one machine (`ray start --head` with one
CPU, a second node with `ray start --address` and its own resource), three pilots of the
real tiny model submitted at once with `--ray-address`: all finish, with a foreground run's
shape of figures, spread over both nodes (each has one CPU and a pilot asks for one). The
cluster's processes are stopped by id at the end (engine.jobs.cluster.stop_nodes)."""
from __future__ import annotations

import shutil
import tempfile

import pytest
from conftest import make_settings
from test_jobs import PILOT, shape, wait_finished

from engine.cli.main import main
from engine.core.domain import Status
from engine.jobs.cluster import disconnect, start_head, start_worker_node, stop_nodes
from engine.store.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, embedded_model_dir):
    settings = make_settings(tmp_path_factory.mktemp("cluster") / "data", embedded_model_dir)
    temp_dir = tempfile.mkdtemp(prefix="roilab-ray-test-")
    try:
        head = start_head(num_cpus=1, temp_dir=temp_dir)
        start_worker_node(head["address"], temp_dir, num_cpus=1, resources={"node2": 1})
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
            mp.setenv("ROILAB_DB_URL", settings.resolved_db_url())
            mp.setenv("ROILAB_RAY_ADDRESS", head["address"])
            log = settings.data_dir / "w.jsonl"
            log.write_text("".join(f'{{"prompt": "Tell me about item {i}."}}\n'
                                   for i in range(6)))
            assert main(["ingest", str(log)]) == 0
            yield settings, head["address"]
    finally:
        disconnect()
        stop_nodes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_three_pilots_at_once_on_two_nodes_all_finish(two_nodes, capsys) -> None:
    import ray

    settings, address = two_nodes
    for _ in range(3):
        assert main([*PILOT, "--detach"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"submitted to Ray at {address},") == 3
    assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2
    store = Store(settings.resolved_db_url())
    runs = [wait_finished(store, r.id, timeout_s=600) for r in store.list_runs()]
    assert len(runs) == 3 and {r.status for r in runs} == {Status.DONE}
    shapes = {repr(shape(store, r.id)) for r in runs}
    assert len(shapes) == 1  # the same variants, results per request and passes
    nodes = {store.get_run_node(r.id)["ray_node_id"] for r in runs}
    assert nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]}  # both nodes worked
