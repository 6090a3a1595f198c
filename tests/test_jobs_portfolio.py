"""Issue 20, phase 2: `roilab portfolio-pilot`, the same variants over several workloads as
parallel Ray jobs. Bad workload ids are one error before Ray is reached or any run exists
(fast, no Ray). On the local default Ray (one head for the module, stopped at the end) with
the real tiny model: three workloads in one command, one line per run as it finishes and
the portfolio roll-up (engine.business.portfolio) of their business cases; with --detach the
ids at once and `roilab portfolio IDS` rolls them up later."""
from __future__ import annotations

import re

import pytest
from test_jobs import TINY, local_ray_dir, shape, wait_finished

from engine.cli.main import main
from engine.core.domain import Status
from engine.store.store import Store

SMALL = ["--model", TINY, "--variants", "int8", "--max-requests", "3", "--max-new-tokens", "4",
         "--batch-size", "2", "--price", "1"]


def ingest(data_dir, names) -> None:
    for name in names:
        log = data_dir / f"{name}.jsonl"
        log.write_text("".join(f'{{"prompt": "{name}: tell me about item {i}."}}\n'
                               for i in range(4)))
        assert main(["ingest", str(log), "--name", name]) == 0


def test_bad_workload_ids_are_one_error_before_anything_is_submitted(
        settings, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    monkeypatch.delenv("ROILAB_RAY_ADDRESS", raising=False)
    ingest(settings.data_dir, ["support"])
    capsys.readouterr()
    for ids, said in [("1,7,9", "no workload 7, 9 in the store"), ("1,x", "'x' is not an id"),
                      ("1,1", "names 1 twice"), (",", "is empty")]:
        assert main(["portfolio-pilot", "--workloads", ids, *SMALL]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("error:") == 1 and "Traceback" not in err
    assert "Stored workloads: 1" in main_err(["portfolio-pilot", "--workloads", "2", *SMALL],
                                             capsys)
    assert Store(settings.resolved_db_url()).list_runs() == []
    assert not (settings.data_dir / "ray").exists()  # Ray was never started


def main_err(argv, capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory, embedded_model_dir):
    with local_ray_dir(tmp_path_factory.mktemp("portfolio") / "data",
                       lambda d: ingest(d, ["support", "claims", "search"]),
                       embedded_model_dir) as settings:
        yield settings


@pytest.mark.slow
def test_a_portfolio_of_three_workloads_runs_as_parallel_jobs_and_rolls_up(
        local_ray, capsys) -> None:
    store = Store(local_ray.resolved_db_url())
    capsys.readouterr()
    assert main(["portfolio-pilot", "--workloads", "1,2,3", *SMALL]) == 0
    out = capsys.readouterr().out
    runs = sorted(store.list_runs(), key=lambda r: r.id)
    assert [(r.workload_id, r.status) for r in runs] == [(w, Status.DONE) for w in (1, 2, 3)]
    assert [r.name for r in runs] == ["pilot: workload 1 (support)",
                                      "pilot: workload 2 (claims)", "pilot: workload 3 (search)"]
    assert out.count("submitted to Ray at 127.0.0.1:") == 3
    finished = re.findall(r"^Run (\d+) \(workload (\d) '(\w+)'\): done after [\d,]+ s, 2 of 2 "
                          r"variants done$", out, re.M)
    assert sorted(int(r) for r, _, _ in finished) == [r.id for r in runs]
    # the same variants over each workload: a foreground run's shape of figures, each
    assert len({repr(shape(store, r.id)) for r in runs}) == 1
    assert shape(store, runs[0].id)[1][1][:3] == ("int8-weights", "done", 3)
    rollup = out[out.index("Portfolio roll-up of 3 run(s)"):]
    for r in runs:
        assert re.search(rf"^  #{r.id}\s+{re.escape(r.name)}\s+none \(keep the baseline\)\s+\$",
                         rollup, re.M)
    assert re.search(r"^\s+Total\s+\$[\d,.]+\s+\$[\d,.]+\s+\$0\.00", rollup, re.M)
    assert "not rolled up" not in rollup  # every baseline measured

    # --detach: the ids at once, the roll-up later from the store
    assert main(["portfolio-pilot", "--workloads", "3,1", "--name", "again", *SMALL,
                 "--detach"]) == 0
    out = capsys.readouterr().out
    ids = re.search(r"`roilab portfolio (\d+),(\d+)`", out).groups()
    assert "Portfolio roll-up" not in out
    for run_id in ids:
        assert wait_finished(store, int(run_id)).status == Status.DONE
    assert main(["portfolio", ",".join(ids)]) == 0
    out = capsys.readouterr().out
    assert "again: workload 3 (search)" in out and "again: workload 1 (support)" in out
