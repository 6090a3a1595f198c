"""The PilotSpec that ``roilab pilot`` and ``roilab demo`` run: built from their flags, or
read from ``--spec FILE`` with the flags the user gave applied over it."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def build_spec(args):
    """The validated PilotSpec: ``--spec FILE`` with the given flags over it, else the
    baseline plus the ``--variants`` the flags name. Neither --hardware nor the file naming
    the hardware leaves CostSettings' own; ``priced_spec`` fills in the detected device's."""
    from engine.specs.pilot import parse_pilot_spec

    return parse_pilot_spec(spec_data(args))


def priced_spec(args, store):
    """The spec priced as the hardware --hardware (or the --spec file) names, else as the
    detected device (engine.pilot.detect.price_pilot): its ``Priced`` (spec, line, warning)."""
    from engine.pilot.detect import price_pilot
    from engine.specs.pilot import parse_pilot_spec

    data = spec_data(args)
    cost = data.get("cost")
    explicit = isinstance(cost, dict) and cost.get("hardware") is not None
    return price_pilot(parse_pilot_spec(data), store, explicit)


def spec_data(args) -> dict:
    """The PilotSpec JSON the flags (or --spec with them) give; ``cost.hardware`` only where
    the user named it."""
    from engine.specs.pilot import (
        VLLM_ONLY,
        CostSettings,
        GenerationSettings,
        MeasurementSettings,
        PilotSpec,
        pilot_variants,
    )

    if args.spec:
        return _spec_with_flags(_read_spec(args.spec), args)
    from engine.core.errors import SpecError

    asked = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(asked) - set(FLAG_VARIANTS))
    if unknown:
        raise SpecError(f"Unknown variant(s) {unknown} in --variants; the flags know "
                        f"{', '.join(FLAG_VARIANTS)} (others: --spec FILE).")
    vllm_only = [v for v in asked if v in VLLM_ONLY]
    if vllm_only and args.backend != "vllm":
        raise SpecError(f"--variants {','.join(vllm_only)} are vLLM engine options (FP8 weights "
                        "/ KV cache, prefix caching, n-gram speculative decoding): add "
                        "--backend vllm (or use int8 for the transformers backend).")
    common = {"model": args.model, "backend": args.backend, "device": args.device,
              "dtype": _dtype(args)}
    variants = pilot_variants(asked, rate=args.rate, **common)  # baseline + the asked ones
    data = PilotSpec(
        name=args.name, workload_id=args.workload, variants=variants,
        generation=GenerationSettings(max_new_tokens=args.max_new_tokens,
                                      batch_size=args.batch_size),
        measurement=MeasurementSettings(repeats=args.repeats, interleave=args.interleave,
                                        min_pass_s=args.min_pass_s),
        cost=CostSettings(price_per_hour=args.price, requests_per_month=args.requests_per_month),
        max_requests=args.max_requests).model_dump(mode="json")
    if args.hardware is None:
        del data["cost"]["hardware"]  # not named: priced_spec detects it
    else:
        data["cost"]["hardware"] = args.hardware
    return data


FLAG_VARIANTS = ("int8", "llmlingua", "fp8", "fp8-kv", "prefix-cache", "ngram-spec")
# Flags given with --spec: these apply over the spec's value (spec key path per flag) ...
SPEC_OVERRIDES = {"name": ("name",), "max_requests": ("max_requests",),
                  "max_new_tokens": ("generation", "max_new_tokens"),
                  "batch_size": ("generation", "batch_size"), "hardware": ("cost", "hardware"),
                  "price": ("cost", "price_per_hour"),
                  "requests_per_month": ("cost", "requests_per_month"),
                  "repeats": ("measurement", "repeats"),
                  "interleave": ("measurement", "interleave"),
                  "min_pass_s": ("measurement", "min_pass_s")}
# ... and these build variants, which the spec defines: refused rather than ignored.
VARIANT_FLAGS = ("model", "backend", "variants", "rate", "device", "dtype")


class Given(argparse.Action):
    """Store the value and note that the user gave the flag: with --spec, a given flag
    applies over the spec (or is refused), while a default leaves the spec's value alone."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}
        # as typed, in order: a command that runs a pilot for the user can print its line
        namespace.given_flags = [*getattr(namespace, "given_flags", ()), (option_string, values)]


class GivenFalse(Given):
    """A switch that sets False, noted as given like the other flags."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        super().__call__(parser, namespace, False, option_string)


def _read_spec(path: str) -> dict:
    """The JSON object in a --spec file, or a one-line SpecError naming the file and the fix."""
    from engine.core.errors import SpecError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"--spec {path}: no such file; check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"--spec {path} cannot be read ({exc}); give a UTF-8 JSON file.") \
            from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"--spec {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                        f"column {exc.colno}; fix the file there.") from None
    if not isinstance(data, dict):
        kind = {list: "list", str: "string", bool: "boolean"}.get(type(data), "number or null")
        raise SpecError(f"--spec {path} holds a JSON {kind}, not an object; write one PilotSpec "
                        "object, e.g. "
                        '{"name": "pilot", "variants": [{"name": "baseline", "model": "..."}]}.')
    return data


def _spec_with_flags(data: dict, args) -> dict:
    """The spec with --workload and each given SPEC_OVERRIDES flag applied; VARIANT_FLAGS refused."""
    from engine.core.errors import SpecError

    given = getattr(args, "given", set())
    refused = [f"--{f.replace('_', '-')}" for f in VARIANT_FLAGS if f in given]
    if refused:
        raise SpecError(f"{', '.join(refused)} cannot be used with --spec: the spec defines the "
                        "variants; put model/backend/device/dtype/techniques in the spec's "
                        "variants, or drop --spec to build the variants from flags.")
    data = {**data, "workload_id": args.workload}  # --workload is required: it always applies
    for flag, keys in SPEC_OVERRIDES.items():
        if flag in given:
            *parents, key = keys
            target = data
            for part in parents:
                section = target.get(part)
                target[part] = target = dict(section) if isinstance(section, dict) else {}
            target[key] = getattr(args, flag)
    return data


def _dtype(args) -> str:
    """--dtype auto: bfloat16 for vLLM on a GPU (what teams serve), else float32 (CPUs)."""
    from engine.backends.base import default_dtype

    return args.dtype if args.dtype != "auto" else default_dtype(args.backend, args.device)


def add_pilot_args(p: argparse.ArgumentParser, max_requests: int | None) -> None:
    p.add_argument("--model", action=Given, default="embedded:smollm2-135m-instruct",
                   help="embedded:smollm2-135m-instruct, a local HF folder, or a hub id")
    p.add_argument("--backend", action=Given, default="transformers",
                   help="transformers, vllm or endpoint")
    p.add_argument("--variants", action=Given, default="int8,llmlingua",
                   help="comma list added to the baseline: int8, llmlingua (transformers); "
                        "fp8 (FP8 weights), fp8-kv (FP8 KV cache), llmlingua, prefix-cache "
                        "(vLLM's prefix cache, off in the other variants), ngram-spec (n-gram "
                        "speculative decoding) (vllm)")
    p.add_argument("--device", action=Given, default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", action=Given, default="auto",
                   choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 for --backend vllm on a GPU, float32 otherwise")
    p.add_argument("--rate", action=Given, type=float, default=0.5, help="LLMLingua target rate")
    p.add_argument("--max-requests", action=Given, type=int, default=max_requests)
    p.add_argument("--max-new-tokens", action=Given, type=int, default=48)
    p.add_argument("--batch-size", action=Given, type=int, default=8)
    p.add_argument("--repeats", action=Given, type=int, default=None,
                   help="timed passes per variant (median and spread reported); default: "
                        "3 on a GPU, 2 on CPU, 1 for an endpoint")
    p.add_argument("--min-pass-s", action=Given, type=float, default=None,
                   help="seconds a timed pass lasts at least, replaying the requests as often "
                        "as that takes; default: 10 on a GPU, 0 (one replay) on CPU or an "
                        "endpoint")
    p.add_argument("--no-interleave", dest="interleave", action=GivenFalse, nargs=0,
                   default=True, help="time each variant's passes back to back instead of "
                   "alternating them across the variants (which needs them loaded at once)")
    p.add_argument("--hardware", action=Given, default=None,
                   help="catalog key the pilot is priced as, see `roilab hardware`; default: "
                        "the device it runs on (a GPU by its NVML name, the CPU as the "
                        "smallest catalog instance with its vCPUs)")
    p.add_argument("--price", action=Given, type=float, default=None,
                   help="$/hour per device (a tensor-parallel variant pays it per GPU); "
                        "default: catalog price")
    p.add_argument("--requests-per-month", action=Given, type=int, default=1_000_000)
    p.add_argument("--spec", help="a PilotSpec JSON file; --name, --max-requests, "
                   "--max-new-tokens, --batch-size, --repeats, --min-pass-s, --no-interleave, "
                   "--hardware, "
                   "--price and "
                   "--requests-per-month given with it apply over its values; the "
                   "variant flags above are refused with it")
