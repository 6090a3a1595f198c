"""Make a results store with an OLD roilab's own code, for tests/test_migrations.py.

Run it with the old commit's ``engine`` package first on the path (see README.md here):

    git archive 5860b82 engine | tar -x -C /tmp/old-5860b82
    PYTHONPATH=/tmp/old-5860b82 .venv/bin/python tests/data/stores/make_store.py \
        sqlite tests/data/stores/5860b82.db
    PYTHONPATH=/tmp/old-5860b82 .venv/bin/python tests/data/stores/make_store.py \
        pg-ddl tests/data/stores/5860b82_postgresql.sql

``sqlite OUT.db``: the old ``Store`` creates OUT.db (its own ``create_all``) and stores what
that version could hold: a workload with its requests, a run with two variants and their
results, and, where the schema had them, a user hardware entry and a load run with samples.
``pg-ddl OUT.sql``: the DDL the old ``create_all`` sends to PostgreSQL (its tables and
indexes compiled for the postgresql dialect), for a test to run on a throwaway server.
Not a test module (no ``test_`` prefix): it must run against the old code, not this one.
"""
from __future__ import annotations

import sys
from pathlib import Path

import engine

EXPECT = {  # what tests/test_migrations.py checks after the upgrade
    "workload": "support log ü", "requests": 3, "run": "pilot ✓", "variants": ["baseline", "int8"],
    "results_per_variant": 3, "weight_bytes": 2_000_000_000, "hardware": "my-a10g",
    "load_samples": 2}


def _parsed(domain):
    reqs = tuple(domain.LogRequest(
        line=i + 1, messages=({"role": "user", "content": f"question {i} ünï"},),
        reference=f"answer {i}", logged_output=f"logged {i}", logged_prompt_tokens=10 + i,
        logged_output_tokens=5 + i, request_id=f"req-{i}", metadata={"team": "support", "i": i})
        for i in range(EXPECT["requests"]))
    issues = (domain.RowIssue(4, "messages", "missing; give a list of chat messages"),)
    return domain.ParsedLog("chat_jsonl", reqs, issues, len(reqs) + 1)


def _results(domain, n: int, scored: bool):
    return [domain.RequestResult(
        request_index=i, output_text=f"out {i} ✓", prompt_tokens_logged=10 + i,
        prompt_tokens_original=11 + i, prompt_tokens_sent=11 + i, output_tokens=4 + i,
        ttft_s=0.01 * (i + 1), latency_s=0.1 * (i + 1), compress_s=0.0,
        ref_exact=1.0 if scored else None, ref_f1=0.5 if scored else None,
        base_rouge_l=0.75 if scored else None) for i in range(n)]


def make_sqlite(out: Path) -> None:
    from engine import domain
    from engine.store import Store

    store = Store(f"sqlite:///{out}")
    raw = b'{"messages": [{"role": "user", "content": "question 0"}]}\n' * 3
    wl = store.add_workload(EXPECT["workload"], "support.jsonl", raw, _parsed(domain))
    variants = [{"name": n, "technique": n} for n in EXPECT["variants"]]
    run = store.create_run(wl.id, EXPECT["run"], {"max_new_tokens": 8}, variants)
    for v, scored in zip(run.variants, (False, True), strict=True):
        store.set_variant_status(v.id, "running")
        store.finish_variant(v.id, _results(domain, EXPECT["results_per_variant"], scored),
                             {"load_s": 1.5, "weight_bytes": EXPECT["weight_bytes"],
                              "peak_mem_bytes": EXPECT["weight_bytes"] + 1, "wall_s": 2.0,
                              "throughput_tok_s": 42.0, "device": "cpu"},
                             {"technique": v.name})
    store.set_run_status(run.id, "done")
    if hasattr(store, "add_hardware"):
        store.add_hardware(key=EXPECT["hardware"], name="My A10G", kind="gpu", memory_gb=24,
                           price_per_hour=0.6, price_source="reserved, 1 year",
                           price_date="2026-11")
    if hasattr(store, "create_load_run"):
        lr = store.create_load_run(wl.id, "load sweep", {"schedule": "concurrency"})
        store.add_load_samples(lr.id, [domain.LoadSample(
            variant="baseline", level=1.0, request_index=i, arrival_s=0.1 * i, sent_s=0.1 * i,
            first_token_s=0.1 * i + 0.02, end_s=0.1 * i + 0.05, output_tokens=3,
            prompt_tokens=10, chunk_times_s=(0.1 * i + 0.02, 0.1 * i + 0.05))
            for i in range(EXPECT["load_samples"])])
        store.set_load_run_status(lr.id, "done")
    store.engine.dispose()


def make_pg_ddl(out: Path) -> None:
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    import engine.store as old_store  # registers every table the old code had on its Base

    for name in ("store_load", "store_hardware"):
        try:
            __import__(f"engine.{name}")
        except ImportError:
            pass
    dialect = postgresql.dialect()
    lines = [f"-- made by tests/data/stores/make_store.py from {engine.__file__}"]
    for table in old_store.Base.metadata.sorted_tables:
        lines.append(f"{str(CreateTable(table).compile(dialect=dialect)).strip()};")
        lines += [f"{CreateIndex(ix).compile(dialect=dialect)};" for ix in
                  sorted(table.indexes, key=lambda ix: ix.name)]
    out.write_text("\n\n".join(lines) + "\n")


if __name__ == "__main__":
    mode, path = sys.argv[1], Path(sys.argv[2])
    if Path(engine.__file__).resolve().parents[1] == Path(__file__).resolve().parents[3]:
        sys.exit(f"engine is {engine.__file__}: put the old commit's tree first on PYTHONPATH")
    (make_sqlite if mode == "sqlite" else make_pg_ddl)(path)
