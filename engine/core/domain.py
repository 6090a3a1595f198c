"""Frozen domain objects that cross layer boundaries (storage never returns ORM rows)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """The status of a run, of one of its variants, or of a load test: one vocabulary for all.

    A ``StrEnum``: members are strings, so they are stored as their value, compare equal to
    it and print as it. Variants stored before there was one vocabulary say "ok" where they
    now say "done": ``Status("ok")`` reads back as ``Status.DONE``.
    """

    PENDING = "pending"  # created, not started
    RUNNING = "running"
    DONE = "done"  # a variant: measured and stored; a run: every variant done
    PARTIAL = "partial"  # a run: the baseline done, some other variants failed
    FAILED = "failed"  # a variant failed or was refused; a run: its baseline or all others did
    INTERRUPTED = "interrupted"  # a run stopped by Ctrl+C or SIGTERM (resumable)
    CANCELLED = "cancelled"  # a run or variant cancelled by the user (resumable)

    @classmethod
    def _missing_(cls, value: object) -> Status | None:
        return cls.DONE if value == "ok" else None  # a variant stored before the one vocabulary

    @property
    def finished(self) -> bool:
        """True once nothing more will happen without a resume: done, partial, failed,
        interrupted or cancelled."""
        return self not in (Status.PENDING, Status.RUNNING)



@dataclass(frozen=True, slots=True)  # slots: a 100k-request log holds 100k of these
class LogRequest:
    """One usable request parsed from an uploaded log."""

    line: int  # 1-based line in the original file where this request (JSONL line, CSV row) starts
    messages: tuple[dict[str, str], ...]  # OpenAI chat messages: {"role": ..., "content": ...}
    reference: str | None = None  # expected answer, when the log has one
    logged_output: str | None = None  # what the production model answered, when logged
    logged_prompt_tokens: int | None = None  # usage.prompt_tokens as logged
    logged_output_tokens: int | None = None  # usage.completion_tokens as logged
    request_id: str | None = None  # custom_id / id, when present
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        """All message contents joined, for display and word statistics."""
        return "\n".join(m["content"] for m in self.messages)


@dataclass(frozen=True)
class RowIssue:
    """Why one line of a log was rejected; the rest of the file is kept."""

    line: int
    field: str
    reason: str  # says what is wrong and how to fix it


@dataclass(frozen=True)
class ParsedLog:
    format: str  # "chat_jsonl" | "prompt_jsonl" | "openai_batch" | "proxy_jsonl" | "csv"
    requests: tuple[LogRequest, ...]
    issues: tuple[RowIssue, ...]
    total_rows: int  # rows seen, valid + invalid (blank lines not counted)
    reference_fields: tuple[str, ...] = ()  # column/keys the references came from, most used first
    ignored_fields: tuple[str, ...] = ()  # columns/top-level keys not read (kept as metadata)


@dataclass(frozen=True)
class Workload:
    id: int
    name: str
    filename: str
    format: str
    n_requests: int
    n_issues: int
    created_at: datetime
    issues: tuple[RowIssue, ...] = ()


@dataclass(frozen=True)
class StoredRequest:
    id: int
    workload_id: int
    index: int  # 0-based position within the workload
    request: LogRequest


@dataclass(frozen=True)
class Generation:
    """What a backend produced for one request."""

    text: str
    prompt_tokens: int  # tokens actually sent to the model
    output_tokens: int
    ttft_s: float  # time to first token, from the start of the batch's generate call
    latency_s: float  # end-to-end for this request (its batch), excluding prompt compression
    # The serving engine's own timings for this request where it reports them (vLLM's
    # RequestOutput.metrics), next to ours; the runner stores them with the variant.
    engine_metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class RequestResult:
    """One request through one variant, with its accuracy metrics."""

    request_index: int
    output_text: str
    prompt_tokens_logged: int | None
    prompt_tokens_original: int  # original prompt, counted with the model's tokenizer
    prompt_tokens_sent: int  # after prompt compression (== original when none)
    output_tokens: int
    ttft_s: float
    latency_s: float  # end-to-end, including prompt compression time
    compress_s: float = 0.0
    error: str | None = None
    # accuracy: None where not applicable (no reference / this is the baseline)
    ref_exact: float | None = None
    ref_contains: float | None = None
    ref_f1: float | None = None
    base_rouge_l: float | None = None
    base_cosine: float | None = None


@dataclass(frozen=True, kw_only=True)
class VariantMeasurements:
    """What the runner measured for one variant, as ``Store.finish_variant`` stores it.

    Keyword-only and typed, so a misspelt measurement is a TypeError where it is built, not
    a NULL in the store. A field the backend could not measure stays None.
    """

    load_s: float | None = None
    weight_bytes: int | None = None
    peak_mem_bytes: int | None = None
    throughput_tok_s: float | None = None  # output tokens / wall time of generation
    wall_s: float | None = None
    device: str | None = None  # e.g. "cuda:0", "endpoint <its URL>"
    technique_report: dict[str, Any] = field(default_factory=dict)  # what techniques did
    passes: tuple[TimedPass, ...] = ()  # every timed pass (engine.pilot.protocol)


@dataclass(frozen=True, kw_only=True)
class TimedPass:
    """One timed pass of a variant over the pilot's requests (revision 0004).

    ``role`` is "timed" for the variant's own passes (pass 0 also produced the outputs that
    accuracy is scored on) and "baseline_end" for the baseline measured again after every
    other variant, the run's noise floor. The machine's load while it ran is kept with it.
    """

    pass_index: int
    role: str = "timed"
    wall_s: float
    throughput_tok_s: float
    output_tokens: int
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    peak_mem_bytes: int | None = None
    others_cpu_pct: float | None = None  # other processes' CPU, % of the whole machine
    load_avg_1m: float | None = None  # the 1-minute load average, highest seen
    gpu_util_pct: float | None = None  # GPU utilisation (NVML), mean; None: no GPU/NVML
    gpu_other_procs: int | None = None  # other processes holding GPU memory
    # Times the pass replayed the requests to last the minimum pass time (revision 0006);
    # None: stored before, one replay.
    replays: int | None = None
    # Runnable tasks that are not this process's or its children's, mean over the pass: the
    # load the pilot itself does not make (revision 0006).
    others_load: float | None = None
    # Seconds the interpreter spent collecting garbage while the pass ran, the heap
    # from before the pass frozen (engine.pilot.gcpause; revision 0010); None: stored before.
    gc_pause_s: float | None = None


@dataclass(frozen=True)
class VariantRun:
    """One variant of a run: its spec (JSON), status and variant-level measurements."""

    id: int
    run_id: int
    name: str
    spec: dict[str, Any]  # the VariantSpec as JSON: exactly what produced these numbers
    status: Status  # pending | running | done | failed | cancelled
    error: str | None = None
    load_s: float | None = None
    weight_bytes: int | None = None
    peak_mem_bytes: int | None = None
    throughput_tok_s: float | None = None  # output tokens / wall time of generation
    wall_s: float | None = None
    device: str | None = None
    technique_report: dict[str, Any] = field(default_factory=dict)  # what techniques did


@dataclass(frozen=True)
class RunProgress:
    """Where a running pilot is, as the process that owns it last said (stored with its
    heartbeat): what a follower in another process shows, since it cannot see the pilot's
    own progress callbacks."""

    fraction: float  # of the whole pilot, 0..1
    variant: str  # the variant(s) being worked on
    message: str  # e.g. "loading model", "pass 2/3: generating 1-32 of 32"

    def as_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "variant": self.variant, "message": self.message}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunProgress:
        return cls(float(d.get("fraction", 0.0)), str(d.get("variant", "")),
                   str(d.get("message", "")))


@dataclass(frozen=True)
class Run:
    id: int
    workload_id: int
    name: str
    spec: dict[str, Any]  # the PilotSpec as JSON
    # pending | running | done | partial (some variants failed) | failed (the baseline, or
    # every other variant, failed): engine.pilot.runner.pilot_outcome; or interrupted
    # (Ctrl+C, SIGTERM: engine.pilot.runner.run_pilot) or cancelled (cancel_run)
    status: Status
    created_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    variants: tuple[VariantRun, ...] = ()
    queued_at: datetime | None = None  # handed to Ray (engine.jobs); None: run in a process
    progress: RunProgress | None = None  # where it is, as its process last said

    @property
    def queued(self) -> bool:
        """Waiting in Ray's queue: pending, handed to Ray, not yet started by a worker."""
        return self.status == Status.PENDING and self.queued_at is not None


@dataclass(frozen=True)
class LoadSample:
    """One request of a load test: when it arrived, was sent, streamed and ended.

    Times are seconds from the start of its load level (``time.perf_counter`` based), so a
    level's samples share one clock. ``chunk_times_s`` holds the arrival time of every
    streamed chunk that carried content (the first one is the first token).
    """

    variant: str
    level: float  # the load level: concurrency, requests/s, or trace speed-up factor
    request_index: int  # position in the workload
    arrival_s: float  # when the schedule released it (== sent_s unless the client lagged)
    sent_s: float
    first_token_s: float | None  # None: no content came back
    end_s: float
    output_tokens: int
    prompt_tokens: int | None = None
    chunk_times_s: tuple[float, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.first_token_s is not None


@dataclass(frozen=True)
class LoadRun:
    """A stored load test: its LoadSpec (JSON) and status; samples are read separately."""

    id: int
    workload_id: int
    name: str
    spec: dict[str, Any]
    status: Status  # pending | running | done | failed
    created_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    n_samples: int = 0


def split_workload(everything: list[StoredRequest], max_requests: int | None
                   ) -> tuple[list[StoredRequest], list[StoredRequest], bool]:
    """``(evaluated, calibration, is_eval_set)``: a pilot evaluates the first ``max_requests``
    (all when None); techniques calibrate or train on the held-out ones beyond them, never
    evaluated, or on the evaluated ones when there are none (``is_eval_set`` True, which
    reports must say). ``roilab export --method gptq`` calibrates on the same split."""
    evaluated = everything[:max_requests] if max_requests else everything
    held_out = everything[len(evaluated):]
    return evaluated, held_out or evaluated, not held_out


@dataclass(frozen=True)
class RunOwner:
    """The process that runs (or ran) a pilot run, and when it last said it was alive."""

    run_id: int
    status: Status
    pid: int
    host: str
    heartbeat_at: datetime
