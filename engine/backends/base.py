"""The one backend interface every inference engine implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from engine.core.domain import Generation
from engine.core.errors import BackendError
from engine.specs.pilot import VariantSpec

Messages = list[dict[str, str]]
# What a random-weights model "said": its tokens are measured, their text means nothing.
RANDOM_TEXT = "<random weights: {n} tokens generated, text not meaningful>"


class NoRoomBeside(BackendError):
    """A variant to be loaded beside others needs memory they hold (raised by ``load`` when
    ``side_by_side``): the runner loads it in a later group, after they are closed."""


@dataclass(frozen=True)
class LoadInfo:
    load_s: float  # wall time to load the model and apply model-level techniques
    # bytes held by weights (quantized storage counted as stored); None where the weights are
    # not ours to read (a remote endpoint)
    weight_bytes: int | None
    device: str  # e.g. "cpu (2 threads)" or "cuda:0 NVIDIA H100 80GB HBM3"
    technique_report: dict[str, Any] = field(default_factory=dict)  # what each technique did


def resolve_device(requested: str) -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(backend: str, device: str) -> str:
    """The dtype a pilot form or flag's "auto" means: bfloat16 for vLLM on a GPU (what teams
    serve), float32 elsewhere (CPUs; the transformers baseline as converted)."""
    if backend == "vllm" and resolve_device(device) == "cuda":
        return "bfloat16"
    return "float32"


class Backend(ABC):
    """Loads one variant's model and generates greedily for batches of chat requests.

    Prompt-level techniques (prompt compression) are applied by the runner before
    ``generate``; model-level techniques (weight quantization) are applied in ``load``.
    """

    name: str = ""
    # Whether several variants of this backend can stay loaded side by side in one process,
    # so the runner can interleave their timed passes (engine.pilot.rounds); a backend that
    # can only on some devices says so in ``interleave_reason``.
    interleavable: bool = False
    # Set by the runner before ``load`` when the variant will be loaded beside others and its
    # passes interleaved with theirs (``suspend``/``resume`` then switch between them).
    side_by_side: bool = False
    # Whether ``suspend`` parks the weights in host memory (the runner then keeps room there).
    suspends_to_host: bool = False

    def __init__(self, spec: VariantSpec, model_path: str) -> None:
        self.spec = spec
        self.model_path = model_path

    @property
    def device(self) -> str:
        """Where this variant's model runs, "cpu" or "cuda": a prompt-stage scorer (LLMLingua)
        loads there too. An endpoint's model runs elsewhere; its scorer runs on this CPU."""
        return "cpu"

    @abstractmethod
    def load(self, calibration: list[Messages] | None = None,
             calibration_is_eval_set: bool = False) -> LoadInfo:
        """Load weights, apply model-stage techniques, return what it cost.

        ``calibration`` holds requests a technique may calibrate or train on (see
        ``engine.techniques.base.TechniqueContext``).
        """

    @abstractmethod
    def count_tokens(self, messages: Messages) -> int:
        """Prompt tokens for these messages as this model would receive them."""

    @abstractmethod
    def generate(self, batch: list[Messages], max_new_tokens: int) -> list[Generation]:
        """Greedy generation for a batch; one Generation per request, in order."""

    @classmethod
    def interleave_reason(cls, spec: VariantSpec, device: str) -> str | None:
        """None when variants of this backend on ``device`` ("cpu", "cuda") can stay loaded
        side by side and be timed in interleaved rounds; else why not, in a sentence."""
        return None if cls.interleavable else \
            f"the {cls.name} backend holds one model at a time"

    @classmethod  # noqa: B027 - an optional hook: most backends run every spec
    def check(cls, spec: VariantSpec, device: str) -> None:
        """Raise ``SpecError`` when this backend cannot run ``spec`` on ``device`` (``"cpu"``
        or ``"cuda"``); the runner calls it for every variant before the pilot starts."""

    def warm_up(self, prompts: list[Messages], batch_size: int,  # noqa: B027 - optional
                max_new_tokens: int) -> None:
        """The backend's own preparation before the protocol's warm-up generation
        (engine.pilot.warmup.warm_up, which then runs the variant's requests untimed at the
        timed batch size and output length): e.g. compiling for each batch shape. ``prompts``
        are all the requests the pilot will send, in the order and batches of ``batch_size``
        it will use. By default nothing."""

    def warmed_up(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Called once the warm-up generation is done: forget what it recorded."""

    def begin_replay(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Called before each replay of the request set, outside the clock: empty whatever a
        replay could reuse from the one before (a serving engine's prefix cache), so every
        replay sees the log as production would. By default nothing."""

    def suspend(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Another variant loaded beside this one is about to be loaded or timed: give back
        what it needs (vLLM: sleep, weights to host memory). By default nothing."""

    def resume(self) -> bool:
        """This variant is about to be timed: take back what ``suspend`` gave. True when it
        had been suspended (the runner then warms it up again before timing)."""
        return False

    warm_up_s: float = 0.0  # seconds spent warming up (compiling) so far, also inside generate

    def serving_report(self) -> dict[str, Any]:
        """How the model was served, for the variant's report (e.g. compile warm-up times)."""
        return {}

    def begin_pass(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Called before each timed pass: settle memory (free what the last pass left) and
        start the peak-memory figure afresh, so each pass's peak is measured from the same
        state and two passes agree. By default nothing (the peak runs on across passes)."""

    @abstractmethod
    def peak_memory_bytes(self) -> int | None:
        """Peak memory while serving: max allocated on CUDA; on CPU, peak process RSS over
        the RSS before loading (weights + activations + KV cache)."""

    def memory_report(self) -> dict[str, Any]:
        """Memory of this variant as served, for ``technique_report["memory"]``: device,
        peak_bytes (and how it was measured), weight_bytes, the KV-cache capacity the engine
        reserved (kv_cache_tokens, kv_cache_bytes, kv_bytes_per_token, kv_method),
        device_total_bytes of one device and the number of devices. Called after
        ``peak_memory_bytes``; backends fill in what they can measure."""
        return {"device": None, "peak_bytes": self.peak_memory_bytes(), "peak_method": None,
                "weight_bytes": None, "kv_cache_tokens": None, "kv_cache_bytes": None,
                "kv_bytes_per_token": None, "kv_method": "not measured by this backend",
                "device_total_bytes": None, "devices": 1}

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release the model; by default nothing beyond dropping the backend object."""
