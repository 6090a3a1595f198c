"""Serialisable options of the serving backends, stored with every run like the techniques.

``VariantSpec.vllm`` holds what a variant asks of vLLM's engine and ``VariantSpec.endpoint``
where an OpenAI-compatible server is and how to reach it. Unknown fields are refused
(``extra="forbid"``): a typo in ``kv_cache_dtype`` must never silently become the default.
Neither model imports its engine: specs validate and serialise without vLLM installed.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.core.redact import refuse_url_credentials

KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VllmOptions(_Options):
    """vLLM engine arguments a variant may change (the rest are vLLM's defaults).

    ``None`` means "what suits the device": on CPU eager mode and 512 MiB of KV cache, on a
    GPU CUDA graphs and vLLM's own memory fraction. The resolved values are reported with
    the variant (``serving.engine_args``).
    """

    # Weight quantization inside vLLM: "fp8" (dynamic, from a bf16/fp32 checkpoint),
    # "bitsandbytes", or a pre-quantized checkpoint's method ("gptq", "awq",
    # "compressed-tensors"; vLLM reads those from the model folder when left None).
    quantization: str | None = Field(None, min_length=1, max_length=40)
    kv_cache_dtype: KvCacheDtype = "auto"
    enable_prefix_caching: bool | None = None  # None: vLLM's default (on)
    # n-gram speculative decoding (prompt lookup: drafts copied from the prompt, no draft
    # model): tokens proposed per step; None: off. Lossless under greedy decoding.
    ngram_speculative_tokens: int | None = Field(None, ge=1, le=16)
    enforce_eager: bool | None = None  # True: no CUDA graphs / torch.compile; None: True on CPU
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    pipeline_parallel_size: int = Field(1, ge=1, le=64)  # devices = tensor x pipeline sizes
    max_model_len: int | None = Field(None, ge=16)  # None: the model's own context length
    max_num_seqs: int | None = Field(None, ge=1, le=4096)  # concurrent sequences per step
    # KV-cache size. vLLM's CPU backend needs it explicitly (its memory-fraction default
    # fails on some NUMA layouts); on a GPU leave it None to use gpu_memory_utilization.
    kv_cache_memory_bytes: int | None = Field(None, ge=16 * 2**20)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    seed: int = 0

    @property
    def devices(self) -> int:
        """GPUs (or CPU sockets) one engine occupies: what a variant is priced by."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


class EndpointOptions(_Options):
    """An OpenAI-compatible server (vLLM, TGI, SGLang, a hosted API) measured over HTTP."""

    base_url: str = Field(min_length=8, description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field(min_length=1, description="the served model name the server expects")
    # The NAME of an environment variable holding the API key, never the key itself: specs are
    # stored with every run and shown in reports.
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float = Field(300.0, gt=0)  # per request, connect to last byte
    # Requests in flight at once; None: the pilot's batch size (each batch is sent concurrently).
    max_concurrency: int | None = Field(None, ge=1, le=1024)

    # Never echo a refused URL back (pydantic's errors would show it, password and all).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, url: str) -> str:
        return refuse_url_credentials(url, "endpoint.base_url")
