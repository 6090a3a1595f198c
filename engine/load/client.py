"""A timed streaming chat-completions client for load tests (one ``httpx.Client``, many threads).

Reuses the endpoint backend's SSE parsing and connection messages; on top of it, every
request records when it was sent, when each content chunk arrived and when the stream
ended, on the caller's clock (``time.perf_counter`` minus the level's start). A failed
request (HTTP error, timeout, dropped connection) becomes a sample with ``error`` set, so
an overloaded server shows up as lost goodput rather than a crashed sweep.

With ``fixed_output`` every request asks for exactly ``max_new_tokens`` tokens (vLLM's
``ignore_eos`` and ``min_tokens``); an endpoint that refuses those fields stops the sweep
with ``OutputLengthRefused``, which says how to sweep it with natural output instead.
"""
from __future__ import annotations

import os
import time
from typing import Any

import httpx

from engine.backends.endpoint_backend import auth_refused, connect_error, sent_key, sse_data
from engine.core.domain import LoadSample
from engine.core.errors import BackendError

# words with which OpenAI-compatible servers refuse a field they do not take (OpenAI:
# "Unrecognized request argument supplied: ignore_eos"; TGI: "unknown field `ignore_eos`")
_FIXED_FIELDS = ("ignore_eos", "min_tokens")


class OutputLengthRefused(BackendError):
    """The endpoint refuses the fields that fix the output length: a setting, not load."""


class TimedClient:
    """Streams chat completions to one server and times them."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None,
                 timeout_s: float = 300.0, max_connections: int = 256,
                 fixed_output: bool = False) -> None:
        self.url = base_url.rstrip("/")
        self.model = model
        self.fixed_output = fixed_output
        self.api_key_env = api_key_env
        headers = {"Content-Type": "application/json"}
        if api_key_env:
            if not os.environ.get(api_key_env):
                raise BackendError(f"api_key_env names {api_key_env}, which is not set; export "
                                   f"{api_key_env}=... before the load test.")
            headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        self.timeout_s = timeout_s
        self.client = httpx.Client(headers=headers, limits=limits,
                                   timeout=httpx.Timeout(timeout_s, connect=10.0))

    def check_model(self) -> None:
        """BackendError naming the fix when the server is down or serves another model."""
        url = f"{self.url}/models"
        try:
            resp = self.client.get(url)
        except httpx.ConnectError as exc:
            raise BackendError(connect_error(url, exc)) from exc
        if resp.status_code == 404:
            return  # no /models route: the first request will say more
        if resp.status_code in (401, 403):
            raise BackendError(auth_refused(resp, url, self.api_key_env, self._key()))
        if resp.status_code >= 400:
            raise BackendError(f"{url} answered HTTP {resp.status_code}: {resp.text[:300]}")
        served = [m.get("id", "") for m in resp.json().get("data", [])]
        if self.model not in served:
            raise BackendError(f"{self.url} does not serve model {self.model!r}; it serves "
                               f"{', '.join(served) or 'nothing'}. Set the target's model to "
                               "one of those (vLLM: the --served-model-name).")

    def send(self, messages: list[dict[str, str]], max_new_tokens: int, t0: float,
             arrival_s: float, variant: str, level: float, index: int) -> LoadSample:
        """One streamed request; times are seconds since ``t0`` (a perf_counter value)."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        if self.fixed_output:  # no early stop at the end-of-sequence token
            body |= {"ignore_eos": True, "min_tokens": max_new_tokens}
        chunks: list[float] = []
        usage: dict[str, Any] | None = None
        error = None
        sent = time.perf_counter() - t0
        try:
            with self.client.stream("POST", f"{self.url}/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    if resp.status_code in (401, 403):
                        raise BackendError(auth_refused(resp, f"{self.url}/chat/completions",
                                                        self.api_key_env, self._key()))
                    self._refused_fields(resp)
                    raise BackendError(f"HTTP {resp.status_code}: {resp.text[:300]}")
                for line in resp.iter_lines():
                    chunk = sse_data(line)
                    if chunk is None:
                        continue
                    usage = chunk.get("usage") or usage
                    if any((c.get("delta") or {}).get("content")
                           for c in chunk.get("choices") or []):
                        chunks.append(time.perf_counter() - t0)
        except OutputLengthRefused:
            raise  # every request would fail the same way: stop the sweep, say the fix
        except (httpx.HTTPError, BackendError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        end = time.perf_counter() - t0
        out = int(usage["completion_tokens"]) if usage and usage.get("completion_tokens") \
            is not None else len(chunks)
        prompt = int(usage["prompt_tokens"]) if usage and usage.get("prompt_tokens") \
            is not None else None
        return LoadSample(variant=variant, level=level, request_index=index,
                          arrival_s=arrival_s, sent_s=sent,
                          first_token_s=chunks[0] if chunks else None, end_s=end,
                          output_tokens=out if error is None else 0, prompt_tokens=prompt,
                          chunk_times_s=tuple(chunks),
                          error=error if error or chunks else "no content streamed")

    def _refused_fields(self, resp: httpx.Response) -> None:
        """OutputLengthRefused when a 400/422 names ignore_eos or min_tokens."""
        if not (self.fixed_output and resp.status_code in (400, 422)
                and any(f in resp.text for f in _FIXED_FIELDS)):
            return
        raise OutputLengthRefused(
            f"{self.url} refuses ignore_eos / min_tokens, the fields that make every request "
            f"generate exactly max_new_tokens (vLLM's OpenAI server takes them): HTTP "
            f"{resp.status_code}: {resp.text[:300]}. Sweep this endpoint with natural output "
            "instead: `roilab load --natural-output`, untick 'Fixed output length' on the "
            "Load test page, or \"fixed_output\": false in a spec file; the tables then show "
            "how many tokens each variant generated per request.")

    def _key(self) -> str | None:
        return sent_key(self.client)

    def close(self) -> None:
        self.client.close()
