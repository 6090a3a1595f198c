"""``roilab prepare-model`` and ``roilab export``: the model a pilot loads, and the
compressed-tensors checkpoint vLLM serves."""
from __future__ import annotations

from engine.cli.common import open_store
from engine.core.settings import Settings


def cmd_prepare_model(args, settings: Settings) -> None:
    from engine.models.prep import resolve_model

    print(resolve_model(args.model, settings, progress=print))


def cmd_export(args, settings: Settings) -> None:
    from engine.core.errors import SpecError
    from engine.export.compressed import calibration_set, export_quantized
    from engine.models.prep import resolve_model

    calibration = None
    if args.workload is not None:
        if args.method != "gptq":
            raise SpecError("--workload is the calibration data of --method gptq; "
                            "round-to-nearest uses none: drop --workload or add --method gptq.")
        calibration = calibration_set(open_store(settings), args.workload, args.max_requests,
                                      args.calibration_samples)
    r = export_quantized(resolve_model(args.model, settings), args.output, bits=args.bits,
                         group_size=args.group_size, dtype=args.dtype, progress=print,
                         device=args.device, method=args.method, calibration=calibration)
    how = "round-to-nearest" if r.method == "rtn" else (
        f"GPTQ calibrated on {r.calibration_samples} requests of workload "
        f"{r.calibration_workload}" + (" (the evaluated ones: none are held out beyond "
                                       "--max-requests)" if r.calibration_is_eval_set
                                       else " (held out: never evaluated by a pilot)"))
    print(f"{r.quantized_layers} layers to {r.bits}-bit (groups of {r.group_size}), {how}, on "
          f"{r.device}: {r.source_bytes / 2**20:,.0f} MiB -> {r.target_bytes / 2**20:,.0f} MiB "
          f"on disk, {r.seconds:.1f} s ({r.quantize_seconds:.1f} s quantizing). Serve it with a "
          f"vllm variant whose model is {r.target} (dtype {r.dtype}).")


def add_parsers(sub) -> None:
    p = sub.add_parser("prepare-model", help="convert the embedded model (or check a folder)")
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.set_defaults(func=cmd_prepare_model)
    p = sub.add_parser("export", help="write a 4/8-bit compressed-tensors checkpoint vLLM serves")
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("-o", "--output", required=True, help="new folder for the checkpoint")
    p.add_argument("--bits", type=int, default=4, choices=[4, 8])
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to quantize (auto: the GPU when one is visible)")
    p.add_argument("--method", default="rtn", choices=["rtn", "gptq"],
                   help="round-to-nearest, or GPTQ calibrated on --workload (llmcompressor)")
    p.add_argument("--workload", type=int, help="gptq: the stored workload to calibrate on")
    p.add_argument("--max-requests", type=int, default=None,
                   help="gptq: the requests a pilot evaluates; it calibrates on those beyond")
    p.add_argument("--calibration-samples", type=int, default=64,
                   help="gptq: at most this many calibration requests")
    p.set_defaults(func=cmd_export)
