"""Shared fixtures: the real embedded model (prepared once), a fresh store per test, and a
real throwaway PostgreSQL server for the store's contract tests."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pg_server import PostgresServer  # noqa: E402  (tests/pg_server.py)

from engine.core.settings import REPO_ROOT, Settings  # noqa: E402
from engine.models.prep import EMBEDDED_NAME, prepare_embedded_model  # noqa: E402
from engine.store.store import Store  # noqa: E402


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The real SmolLM2-135M-Instruct folder, converted from the wheel on first use."""
    return prepare_embedded_model(Settings(data_dir=REPO_ROOT / "data"))


def make_settings(data_dir: Path, model_dir: Path | None) -> Settings:
    """Settings over an empty data dir that shares the prepared model."""
    (data_dir / "models").mkdir(parents=True, exist_ok=True)
    if model_dir is not None:
        (data_dir / "models" / EMBEDDED_NAME).symlink_to(model_dir, target_is_directory=True)
    return Settings(data_dir=data_dir, db_url=f"sqlite:///{data_dir / 'roilab.db'}")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A fresh data dir and SQLite file, without the model (fast tests)."""
    return make_settings(tmp_path / "data", None)


@pytest.fixture
def model_settings(tmp_path: Path, embedded_model_dir: Path) -> Settings:
    """A fresh data dir and SQLite file, with the real embedded model available."""
    return make_settings(tmp_path / "data", embedded_model_dir)


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store(settings.resolved_db_url())


VLLM_SERVED = "smollm2"  # --served-model-name of the session's vllm serve


@pytest.fixture(scope="session")
def vllm_server(embedded_model_dir: Path, tmp_path_factory) -> Iterator[str]:
    """One real ``vllm serve`` of the embedded model per test session, on a free loopback
    port (engine.backends.vllm_serve, as ``roilab load --serve`` starts it); yields its /v1 URL."""
    from importlib.util import find_spec

    from engine.backends.vllm_serve import vllm_server as serve
    from engine.core.errors import BackendError

    if find_spec("vllm") is None:
        pytest.skip("vLLM is not installed: make vllm")
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    try:  # CPU start-up: ~30 s on a quiet 2-core machine, minutes under load
        with serve(str(embedded_model_dir), VLLM_SERVED, start_timeout_s=420,
                   log_path=log) as url:
            yield url
    except BackendError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for this test session, stopped and deleted at the end.

    Fails (never skips) without the server binaries: CI must run the Postgres contract.
    """
    try:
        server = PostgresServer.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer):
    """A fresh empty database on the session's server (dropped after the test)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
