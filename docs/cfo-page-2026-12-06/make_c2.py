"""c2: tests/test_business.py's hand-made stored run (measured on an A100, right-sized by
projection to RTX 4090s) in a fresh SQLite store.  Usage: python make_c2.py TESTS_DIR DB_PATH
(run with PYTHONPATH at the checkout whose tests/ and engine/ you mean)."""
import sys

sys.path.insert(0, sys.argv[1])
import test_business as tb  # noqa: E402

from engine.store.store import Store  # noqa: E402

print("run", tb._stored_run(Store(f"sqlite:///{sys.argv[2]}")))
