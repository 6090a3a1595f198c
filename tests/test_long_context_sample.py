"""The long-context support sample (data/samples/long_context_support.jsonl): in sync with its
sources and builder, parseable, and sized for the embedded model's 8,192-token context."""
from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from engine.ingest.logs import parse_log

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "samples" / "long_context_support.jsonl"
BUILDER = REPO / "data" / "samples" / "make_long_context.py"
TOKENIZER = REPO / "data" / "models" / "smollm2-135m-instruct" / "tokenizer.json"


@pytest.fixture(scope="module")
def parsed():
    return parse_log(SAMPLE.read_bytes(), SAMPLE.name)


def test_jsonl_matches_its_sources():
    done = subprocess.run([sys.executable, str(BUILDER), "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout


def test_parses_into_24_requests_with_references(parsed):
    assert parsed.format == "chat_jsonl"
    assert (len(parsed.requests), parsed.issues) == (24, ())
    assert len({r.request_id for r in parsed.requests}) == 24
    assert all(r.reference and r.reference.strip() for r in parsed.requests)
    for r in parsed.requests:
        roles = [m["role"] for m in r.messages]
        assert roles[0] == "system" and roles[-1] == "user" and len(roles) >= 8
        assert r.logged_output is None  # the history's assistant turns are not the reply


def test_every_system_message_is_the_same_manual(parsed):
    systems = {r.messages[0]["content"].encode("utf-8") for r in parsed.requests}
    assert len(systems) == 1
    system = systems.pop().decode("utf-8")
    assert system.startswith("You are the support assistant for Larkspur Home Hub.")
    assert "## 12. Error codes" in system


def test_prompts_fit_the_embedded_model(parsed):
    if not TOKENIZER.exists():
        pytest.skip(f"no tokenizer at {TOKENIZER.relative_to(REPO)}")
    from engine.ingest.stats import tokenizer_counter

    count = tokenizer_counter(TOKENIZER)
    tokens = count([r.prompt_text for r in parsed.requests])
    assert statistics.median(tokens) >= 4_000
    assert max(tokens) < 7_800
