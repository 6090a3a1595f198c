"""Endpoint backend: measure any OpenAI-compatible server (vLLM, TGI, SGLang, a hosted API).

Each batch is sent concurrently (up to ``endpoint.max_concurrency``) as streaming chat
completions at temperature 0. Per request: time to first token is the first chunk that
carries content, latency the end of the stream, both from the moment the batch is sent (as
for the local backends); output tokens come from the server's usage report
(``stream_options.include_usage``) or, where the server sends none, are counted with the
local tokenizer. No model is loaded here: ``VariantSpec.model`` only names the tokenizer
used to count prompt tokens before sending (the server's usage gives the exact count sent).

The API key is read from the environment variable named in ``endpoint.api_key_env`` when
the variant runs; it is never stored.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from engine.backends.base import Backend, LoadInfo, Messages
from engine.backends.vllm_checks import check_prompt_stage_only
from engine.core.domain import Generation
from engine.core.errors import BackendError, SpecError
from engine.core.redact import auth_sent


class EndpointBackend(Backend):
    name = "endpoint"
    interleavable = True  # a client only: nothing held but a connection

    def __init__(self, spec, model_path: str) -> None:
        super().__init__(spec, model_path)
        self.opts = spec.endpoint
        self.url = self.opts.base_url.rstrip("/")
        self._client: httpx.Client | None = None
        self.tokenizer = None
        self._usage_missing = 0

    @classmethod
    def check(cls, spec, device: str) -> None:
        check_prompt_stage_only(spec, "endpoint")
        opts = spec.endpoint
        if opts is None:
            raise SpecError(f"Variant {spec.name!r}: backend 'endpoint' needs endpoint options "
                            "(base_url, model).")
        if not opts.base_url.startswith(("http://", "https://")):
            raise SpecError(f"Variant {spec.name!r}: endpoint.base_url {opts.base_url!r} must "
                            "start with http:// or https:// (e.g. http://127.0.0.1:8000/v1).")
        if opts.api_key_env and not os.environ.get(opts.api_key_env):
            raise SpecError(f"Variant {spec.name!r}: endpoint.api_key_env names "
                            f"{opts.api_key_env}, which is not set; export {opts.api_key_env}=... "
                            "before running the pilot.")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.opts.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[self.opts.api_key_env]}"
        return headers

    def _key(self) -> str | None:
        return sent_key(self._client)

    def load(self, calibration: list[Messages] | None = None,
             calibration_is_eval_set: bool = False) -> LoadInfo:
        self.check(self.spec, "cpu")
        self._client = httpx.Client(headers=self._headers(),
                                    timeout=httpx.Timeout(self.opts.timeout_s, connect=10.0))
        self._load_tokenizer()
        t0 = time.perf_counter()
        served = self._served_models()
        if served is not None and self.opts.model not in served:
            raise BackendError(f"{self.url} does not serve model {self.opts.model!r}; it serves "
                               f"{', '.join(served) or 'nothing'}. Set endpoint.model to one of "
                               "those (vLLM: the --served-model-name, by default the model path).")
        report = {"endpoint": self.url, "served_model": self.opts.model,
                  "tokenizer": self.model_path if self.tokenizer else "none (approximate counts)"}
        return LoadInfo(load_s=time.perf_counter() - t0, weight_bytes=None,
                        device=f"endpoint {self.url}", technique_report={"_model": report})

    def _load_tokenizer(self) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        except Exception:  # noqa: BLE001 - a hosted model's tokenizer is often not available
            self.tokenizer = None

    def _served_models(self) -> list[str] | None:
        """Model ids from GET /models, or None where the server has no such route."""
        resp = self._request("GET", f"{self.url}/models")
        if resp.status_code == 404:
            return None
        self._raise_for_status(resp, f"{self.url}/models")
        return [m.get("id", "") for m in resp.json().get("data", [])]

    def _request(self, method: str, url: str, **kwargs) -> httpx.Response:
        try:
            return self._client.request(method, url, **kwargs)
        except httpx.ConnectError as exc:
            raise BackendError(connect_error(url, exc)) from exc
        except httpx.TimeoutException as exc:
            raise BackendError(f"{url} did not answer within {self.opts.timeout_s:g} s; check the "
                               "server is up and not overloaded, or raise endpoint.timeout_s."
                               ) from exc

    def _raise_for_status(self, resp: httpx.Response, url: str) -> None:
        if resp.status_code < 400:
            return
        body = resp.text[:300] if not resp.is_stream_consumed or resp.is_closed else ""
        if resp.status_code in (401, 403):
            raise BackendError(auth_refused(resp, url, self.opts.api_key_env, self._key()))
        if resp.status_code == 404:
            fix = ("check endpoint.base_url (it usually ends in /v1) and endpoint.model "
                   f"({self.opts.model!r}).")
        elif resp.status_code < 500:
            fix = "the server refused the request; its message above says why."
        else:
            fix = "the server failed; see its log."
        raise BackendError(f"{url} answered HTTP {resp.status_code}: {body} - {fix}")

    def count_tokens(self, messages: Messages) -> int:
        if self.tokenizer is None:  # about 4 characters a token in English
            return max(1, sum(len(m["content"]) for m in messages) // 4)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, batch: list[Messages], max_new_tokens: int) -> list[Generation]:
        workers = min(len(batch), self.opts.max_concurrency or len(batch))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda m: self._stream(m, max_new_tokens, t0), batch))

    def _stream(self, messages: Messages, max_new_tokens: int, t0: float) -> Generation:
        url = f"{self.url}/chat/completions"
        body = {"model": self.opts.model, "messages": messages, "max_tokens": max_new_tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        ttft: float | None = None
        usage: dict[str, Any] | None = None
        try:
            with self._client.stream("POST", url, json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for_status(resp, url)
                for line in resp.iter_lines():
                    chunk = sse_data(line)
                    if chunk is None:
                        continue
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            ttft = ttft if ttft is not None else time.perf_counter() - t0
                            parts.append(content)
        except httpx.ConnectError as exc:
            raise BackendError(connect_error(url, exc)) from exc
        except httpx.TimeoutException as exc:
            raise BackendError(f"{url} did not finish a request within {self.opts.timeout_s:g} "
                               "s; raise endpoint.timeout_s or check the server.") from exc
        latency = time.perf_counter() - t0
        text = "".join(parts).strip()
        return Generation(text=text, prompt_tokens=self._prompt_tokens(messages, usage),
                          output_tokens=self._output_tokens(text, usage),
                          ttft_s=ttft if ttft is not None else latency, latency_s=latency)

    def _prompt_tokens(self, messages: Messages, usage: dict | None) -> int:
        if usage and usage.get("prompt_tokens") is not None:
            return int(usage["prompt_tokens"])
        return self.count_tokens(messages)

    def _output_tokens(self, text: str, usage: dict | None) -> int:
        if usage and usage.get("completion_tokens") is not None:
            return int(usage["completion_tokens"])
        self._usage_missing += 1
        if self.tokenizer is None:
            return max(1, len(text) // 4) if text else 0
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def serving_report(self) -> dict[str, Any]:
        return {"engine": "OpenAI-compatible endpoint", "base_url": self.url,
                "served_model": self.opts.model, "streaming": True,
                "max_concurrency": self.opts.max_concurrency or "batch size",
                "output_tokens": "server usage" if not self._usage_missing else
                f"counted locally for {self._usage_missing} request(s) without usage",
                "timing": "ours: from sending the batch to the first content chunk / the end "
                          "of the stream, over HTTP"}

    def peak_memory_bytes(self) -> int | None:
        return None  # the server's memory is not ours to read

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def sse_data(line: str) -> dict | None:
    """The JSON of one server-sent-events ``data:`` line; None for keep-alives and [DONE]."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise BackendError(f"The endpoint sent a stream line that is not JSON: {data[:200]!r}; "
                           "is base_url an OpenAI-compatible API?") from exc


def connect_error(url: str, exc: Exception) -> str:
    return (f"Cannot connect to {url}: {exc}. Is the server running and is endpoint.base_url "
            "right? Start one with e.g. `python -m engine.backends.vllm_launcher serve MODEL --port 8000` "
            "and use base_url http://127.0.0.1:8000/v1.")


def sent_key(client: httpx.Client | None) -> str | None:
    """The bearer key ``client`` sends, as sent (for its length in a message, never shown)."""
    auth = client.headers.get("Authorization") if client is not None else None
    return auth.removeprefix("Bearer ") if auth else None


def auth_refused(resp: httpx.Response, url: str, api_key_env: str | None, key: str | None) -> str:
    """The message for an HTTP 401/403: what was sent (never the key) and the fix. The
    server's own text is kept, with the key cut out should the server echo it."""
    try:
        body = resp.text[:300]
    except httpx.ResponseNotRead:
        body = ""
    if key:
        body = body.replace(key, "<key>")
    fix = ("check that the key is valid for this server" if key else
           "set api_key_env to the NAME of the environment variable holding the key and "
           "export it")
    return (f"{resp.status_code} {resp.reason_phrase} from {url}: "
            f"{auth_sent(api_key_env, key)}; {fix}." + (f" The server said: {body}" if body
                                                        else ""))
