"""Ingest benchmark: a generated 100,000-request chat JSONL through ``roilab ingest``.

Runs the real CLI in a child process against a fresh SQLite file and prints the wall time
and the child's peak resident memory (``ru_maxrss`` of the finished child, so interpreter
start-up and imports are included, as a user sees them). Issue 13 asks for < 5 s and
< 300 MiB on a 100k-request (~48 MiB) log.

    .venv/bin/python bench/bench_ingest.py [--requests 100000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_WORDS = ("invoice", "refund", "password", "shipping", "order", "account", "delayed", "the",
          "please", "help", "my", "with", "cannot", "login", "charged", "twice", "where", "is")


def write_log(path: Path, n: int, seed: int = 13) -> int:
    """A chat JSONL of ``n`` requests, ~480 bytes each (system + user + logged reply + usage)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            question = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(25, 45)))
            row = {"id": f"req-{i:06d}", "messages": [
                {"role": "system", "content": "You are a concise support assistant."},
                {"role": "user", "content": question},
                {"role": "assistant", "content": "Sorry about that; here is what to do."}],
                "reference": "Refund issued", "usage": {"prompt_tokens": 60,
                                                        "completion_tokens": 9},
                "metadata": {"team": rng.choice(("billing", "tech"))}}
            out.write(json.dumps(row) + "\n")
    return path.stat().st_size


def run_ingest(log: Path, data_dir: Path) -> tuple[float, float, str]:
    """(seconds, peak MiB, output) of one ``roilab ingest`` child process."""
    env = {**os.environ, "ROILAB_DATA_DIR": str(data_dir),
           "ROILAB_DB_URL": f"sqlite:///{data_dir / 'bench.db'}"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "engine.cli.main", "ingest", str(log),
                           "--name", "bench"], cwd=REPO, env=env, capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    if done.returncode:
        raise SystemExit(f"ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, peak_mib, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="write the log and database here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / f"bench_{args.requests}.jsonl"
        size = write_log(log, args.requests)
        seconds, peak_mib, said = run_ingest(log, folder / "data")
    print(said)
    print(f"{args.requests:,} requests, {size / 2**20:.1f} MiB: {seconds:.2f} s, "
          f"peak {peak_mib:.0f} MiB RSS")


if __name__ == "__main__":
    main()
