"""Secrets stay secret (issue 13, item 4): database URLs are masked in every message, endpoint
URLs with credentials are refused before anything is stored, and a 401 says what was sent
(the variable and the key's length), never the key. Fast: SQLite files, a closed loopback
port and a tiny HTTP server on 127.0.0.1 that answers 401."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.backends.vllm_serve import free_port
from engine.cli.main import main
from engine.core.errors import BackendError
from engine.core.redact import mask_db_url
from engine.specs.backends import EndpointOptions
from engine.store.store import Store

PW = "SECRETPW"
KEY = "sk-abcdefghi"  # 12 characters


@pytest.mark.parametrize("url, shown", [
    ("u:SECRETPW@bogus", "u:***@bogus"),  # no scheme: SQLAlchemy cannot parse it
    ("postgresql+psycopg://u:SECRETPW@127.0.0.1:notaport/db",
     "postgresql+psycopg://u:***@127.0.0.1:notaport/db"),  # nor a port that is not a number
    ("postgresql+psycopg://u:SECRET/PW@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
    ("weird:u:p@ss@host", "weird:***@host"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),  # nothing to hide
])
def test_mask_db_url_hides_the_password_parsed_or_not(url, shown) -> None:
    assert mask_db_url(url) == shown


@pytest.mark.parametrize("url, says", [
    ("u:SECRETPW@bogus", "is not a database URL (u:***@bogus)"),
    ("postgresql+psycopg://u:SECRETPW@127.0.0.1:notaport/db",
     "is not a database URL (postgresql+psycopg://u:***@127.0.0.1:notaport/db)"),
])
def test_cli_turns_a_malformed_db_url_into_one_masked_line(url, says, settings, monkeypatch,
                                                           capsys) -> None:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", url)
    assert main(["workloads"]) == 2
    err = capsys.readouterr().err
    assert PW not in err and says in err and "ROILAB_DB_URL" in err
    assert "postgresql+psycopg://USER:PASSWORD@HOST:5432/DBNAME" in err  # an example to copy
    assert len(err.strip().splitlines()) == 1  # one line, no traceback


def test_cli_masks_a_postgres_url_whose_server_is_not_there(settings, monkeypatch,
                                                            capsys) -> None:
    port = free_port()  # nothing listens there: refused at once, no timeout
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", f"postgresql+psycopg://u:{PW}@127.0.0.1:{port}/db")
    assert main(["workloads"]) == 2
    err = capsys.readouterr().err
    assert PW not in err
    assert f"Cannot open results store postgresql+psycopg://u:***@127.0.0.1:{port}/db" in err
    assert "is the server running" in err


def test_endpoint_url_with_credentials_is_refused_and_nothing_stored(settings, monkeypatch,
                                                                     tmp_path, capsys) -> None:
    url = f"https://user:{PW}@api.example.com/v1"
    with pytest.raises(ValueError) as refused:
        EndpointOptions(base_url=url, model="m")
    assert PW not in str(refused.value) and "api_key_env" in str(refused.value)
    assert EndpointOptions(base_url="https://api.example.com:8443/v1", model="m")  # still fine

    db = settings.resolved_db_url()
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", db)
    log = tmp_path / "log.jsonl"
    log.write_text('{"prompt": "What is 2+2?", "reference": "4"}\n')
    assert main(["ingest", str(log)]) == 0
    [workload] = Store(db).list_workloads()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"workload_id": workload.id, "variants": [
        {"name": "prod", "backend": "endpoint", "model": "m",
         "endpoint": {"base_url": url, "model": "m"}}]}))
    capsys.readouterr()
    assert main(["pilot", "--workload", str(workload.id), "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "carries credentials" in err and "api_key_env" in err and PW not in err
    assert Store(db).list_runs() == []  # refused before anything was stored

    assert main(["load", "--workload", str(workload.id), "--url", url, "--model", "m"]) == 2
    err = capsys.readouterr().err
    assert "carries credentials" in err and "--url" in err and PW not in err
    assert Store(db).list_load_runs() == []


class _Refuses(BaseHTTPRequestHandler):
    """Answers every request 401, echoing the Authorization header it got (as some servers
    do), and records it so a test can see what was really sent."""

    seen: list[str | None] = []

    def _refuse(self) -> None:
        auth = self.headers.get("Authorization")
        self.seen.append(auth)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps({"error": f"invalid credentials: {auth}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    _Refuses.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


SENT_KEY = "sent Authorization: Bearer <key from $ROILAB_TEST_KEY, 12 characters>"
SENT_NONE = "sent no Authorization header (api_key_env not set)"


@pytest.mark.parametrize("key_env, sent", [("ROILAB_TEST_KEY", SENT_KEY), (None, SENT_NONE)])
def test_endpoint_backend_401_says_what_was_sent(refusing_server, key_env, sent, monkeypatch,
                                                 tmp_path) -> None:
    from engine.backends.endpoint_backend import EndpointBackend
    from engine.specs.pilot import VariantSpec

    monkeypatch.setenv("ROILAB_TEST_KEY", KEY)
    spec = VariantSpec(name="prod", backend="endpoint", model="m", endpoint=EndpointOptions(
        base_url=refusing_server, model="m", api_key_env=key_env))
    backend = EndpointBackend(spec, str(tmp_path))  # no tokenizer there: approximate counts
    with pytest.raises(BackendError) as refused:
        backend.load()
    backend.close()
    msg = str(refused.value)
    assert msg.startswith(f"401 Unauthorized from {refusing_server}/models: {sent}")
    assert KEY not in msg
    assert _Refuses.seen == [f"Bearer {KEY}" if key_env else None]


@pytest.mark.parametrize("key_env, sent", [("ROILAB_TEST_KEY", SENT_KEY), (None, SENT_NONE)])
def test_load_client_401_says_what_was_sent(refusing_server, key_env, sent,
                                            monkeypatch) -> None:
    from engine.load.client import TimedClient

    monkeypatch.setenv("ROILAB_TEST_KEY", KEY)
    client = TimedClient(refusing_server, "m", api_key_env=key_env, timeout_s=10)
    with pytest.raises(BackendError) as refused:
        client.check_model()
    assert str(refused.value).startswith(f"401 Unauthorized from {refusing_server}/models: {sent}")
    sample = client.send([{"role": "user", "content": "hi"}], 4, t0=0.0, arrival_s=0.0,
                         variant="prod", level=1, index=0)
    client.close()
    assert f"401 Unauthorized from {refusing_server}/chat/completions: {sent}" in sample.error
    assert KEY not in str(refused.value) and KEY not in sample.error
    assert _Refuses.seen == [f"Bearer {KEY}" if key_env else None] * 2
