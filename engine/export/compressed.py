"""Export a weight-quantized checkpoint that vLLM serves natively (compressed-tensors format).

The transformers backend quantizes weights in memory (torchao, quanto, bitsandbytes, HQQ);
vLLM instead loads a checkpoint that is already quantized and picks its own kernels for it
(Marlin/Machete on NVIDIA GPUs, oneDNN on CPU). ``export_quantized`` writes such a checkpoint:
every Linear layer except the LM head gets group-wise symmetric integer weights (``bits`` = 4
or 8, one scale per ``group_size`` input columns, the scheme of the in-memory int4/int8
techniques) packed in the ``compressed-tensors`` "pack-quantized" layout (W4A16 / W8A16:
activations stay in the model dtype). The folder is a normal Hugging Face model folder: give
it as a vLLM variant's ``model`` and vLLM reads the method from its ``config.json``
(``quantization_config.quant_method = "compressed-tensors"``).

Two ways to choose the integers, same format:

* ``method="rtn"``: round-to-nearest, here. On a GPU (``device`` "auto" or "cuda") each
  layer is moved there, quantized and packed, and moved back, one at a time: only one layer's
  weights are ever on the GPU, so any model that fits in host memory exports.
* ``method="gptq"``: GPTQ through LLM Compressor (engine/export/gptq.py), calibrated on a
  workload's held-out requests (``calibration_set``); it runs in a child process because
  llmcompressor needs a newer compressed-tensors than vLLM's.

Written to a staging folder first and renamed into place, so an interrupted export never
leaves a half-written checkpoint that a later pilot would load.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.core.errors import ModelPrepError, SpecError
from engine.models.prep import RANDOM_MARKER, is_random_model

BITS = (4, 8)
DTYPES = ("bfloat16", "float16")  # vLLM's CPU and GPU W4A16/W8A16 kernels take these
METHODS = ("rtn", "gptq")
DEVICES = ("auto", "cpu", "cuda")
EXPORT_MARKER = "roilab_export.json"
FORMAT = "compressed-tensors/pack-quantized"


@dataclass(frozen=True)
class CalibrationSet:
    """The requests GPTQ calibrates on: a workload's held-out requests, as a pilot splits them
    (``engine.core.domain.split_workload``); the evaluated ones when none are held out."""

    workload_id: int
    request_ids: list[int]
    messages: list[list[dict]]
    is_eval_set: bool  # True: no held-out requests, so these are the ones a pilot evaluates


@dataclass(frozen=True)
class ExportReport:
    source: str
    target: str
    bits: int
    group_size: int
    dtype: str
    format: str  # "compressed-tensors/pack-quantized"
    quantized_layers: int
    kept_layers: list[str]  # Linear layers left in the model dtype (the LM head)
    source_bytes: int  # safetensors on disk
    target_bytes: int
    seconds: float  # the whole export: load, quantize, write
    method: str = "rtn"
    device: str = "cpu"  # where the weights were quantized
    quantize_seconds: float = 0.0  # choosing and packing the integers (GPTQ: its whole child)
    calibration_workload: int | None = None
    calibration_samples: int = 0
    calibration_is_eval_set: bool | None = None
    calibration_request_ids: list[int] = field(default_factory=list)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def check_export(bits: int, group_size: int, dtype: str, method: str = "rtn") -> None:
    if bits not in BITS:
        raise SpecError(f"bits={bits}: export writes {' or '.join(map(str, BITS))}-bit weights "
                        "(W4A16 / W8A16, which vLLM serves on CPU and GPU).")
    if group_size < 8 or group_size & (group_size - 1):
        raise SpecError(f"group_size={group_size}: use a power of two of at least 8 "
                        "(32, 64 and 128 are usual).")
    if dtype not in DTYPES:
        raise SpecError(f"dtype={dtype!r}: the exported model runs in {' or '.join(DTYPES)} "
                        "(vLLM's quantized kernels take no float32 activations).")
    if method not in METHODS:
        raise SpecError(f"method={method!r}: use 'rtn' (round-to-nearest) or 'gptq' "
                        "(calibrated on a workload's requests through llmcompressor).")


def export_device(device: str = "auto") -> str:
    """"cuda" or "cpu" for ``device`` ("auto": the GPU when one is visible)."""
    if device not in DEVICES:
        raise SpecError(f"device={device!r}: use auto, cpu or cuda.")
    import torch

    visible = torch.cuda.is_available()
    if device == "cuda" and not visible:
        raise SpecError("device='cuda' but no GPU is visible to torch (torch.cuda.is_available() "
                        "is False: no GPU, CUDA_VISIBLE_DEVICES empty, or a CPU build of torch). "
                        "Use --device auto or cpu, or run the export on a GPU machine.")
    return "cuda" if device == "cuda" or (device == "auto" and visible) else "cpu"


def calibration_set(store, workload_id: int, max_requests: int | None,
                    samples: int) -> CalibrationSet:
    """Up to ``samples`` calibration requests of a stored workload: those beyond the first
    ``max_requests`` (which a pilot with that ``--max-requests`` evaluates)."""
    from engine.core.domain import split_workload

    if samples < 1:
        raise SpecError(f"calibration samples={samples}: use at least 1 (16-128 are usual).")
    everything = store.get_requests(workload_id)
    if not everything:
        raise SpecError(f"Workload {workload_id} has no requests (or does not exist): ingest a "
                        "log with `roilab ingest LOG` and pass the id it prints as --workload.")
    _, calibrate_on, is_eval_set = split_workload(everything, max_requests)
    chosen = calibrate_on[:samples]
    return CalibrationSet(workload_id, [r.id for r in chosen],
                          [list(r.request.messages) for r in chosen], is_eval_set)


def export_quantized(model_dir: str | Path, out_dir: str | Path, bits: int = 4,
                     group_size: int = 64, dtype: str = "bfloat16", progress=None,
                     device: str = "auto", method: str = "rtn",
                     calibration: CalibrationSet | None = None) -> ExportReport:
    """Quantize ``model_dir`` (a local Hugging Face folder) into ``out_dir``; see the module doc.

    ``progress(message)`` is called at each stage. SpecError for bad settings, a model whose
    layer widths are not multiples of ``group_size``, CUDA asked for without a GPU, or GPTQ
    without ``calibration``; ModelPrepError when the model can't load or llmcompressor is
    missing.
    """
    check_export(bits, group_size, dtype, method)
    notify = progress or (lambda _m: None)
    source, target = Path(model_dir), Path(out_dir)
    if target.exists() and any(target.iterdir()):
        raise SpecError(f"{target} exists and is not empty; name a new folder (nothing was "
                        "overwritten).")
    where = export_device(device)
    if method == "gptq":
        from engine.export.gptq import check_gptq

        check_gptq(str(source), calibration)
    t0 = time.perf_counter()
    staging = target.parent / f".{target.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if method == "gptq":
            from engine.export.gptq import run_gptq

            done = run_gptq(source, staging, bits, group_size, dtype, where, calibration, notify)
        else:
            done = _export_rtn(source, staging, bits, group_size, dtype, where, notify)
        for extra in ("generation_config.json", "chat_template.jinja", RANDOM_MARKER):
            if (source / extra).is_file() and not (staging / extra).exists():
                shutil.copyfile(source / extra, staging / extra)
        cal = calibration if method == "gptq" else None
        report = ExportReport(
            source=str(source), target=str(target), bits=bits, group_size=group_size,
            dtype=dtype, format=FORMAT, quantized_layers=done["quantized_layers"],
            kept_layers=done["kept_layers"], source_bytes=_folder_bytes(source),
            target_bytes=_folder_bytes(staging), seconds=round(time.perf_counter() - t0, 2),
            method=method, device=where, quantize_seconds=round(done["quantize_seconds"], 2),
            calibration_workload=cal.workload_id if cal else None,
            calibration_samples=done.get("calibration_samples", 0),
            calibration_is_eval_set=cal.is_eval_set if cal else None,
            calibration_request_ids=cal.request_ids if cal else [])
        (staging / EXPORT_MARKER).write_text(json.dumps(asdict(report), indent=1))
        if target.exists():
            target.rmdir()  # empty, checked above
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    notify("done")
    return report


def _export_rtn(source: Path, staging: Path, bits: int, group_size: int, dtype: str,
                device: str, notify) -> dict[str, Any]:
    """Round-to-nearest into ``staging``, each layer quantized and packed on ``device``."""
    import torch

    try:
        from compressed_tensors.compressors import ModelCompressor, compress_module
        from compressed_tensors.quantization import (
            QuantizationArgs,
            QuantizationConfig,
            QuantizationScheme,
            QuantizationStatus,
            apply_quantization_config,
        )
    except ImportError as exc:
        raise ModelPrepError("Export needs the compressed-tensors package, which comes with "
                             "vLLM: run `make vllm` (or pip install compressed-tensors).") from exc

    from engine.techniques.quant_backends import check_group_size, is_decoder_linear

    model, tokenizer = _load(source, dtype, device, notify)
    check_group_size(model, group_size)  # the same layers and rule as in-memory 4-bit weights
    linears = [m for n, m in model.named_modules() if is_decoder_linear(m, n)]
    kept = [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not is_decoder_linear(m, n)]
    weights = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group",
                               group_size=group_size)
    config = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
        ignore=kept, quantization_status=QuantizationStatus.INITIALIZED)
    apply_quantization_config(model, config)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    notify(f"quantizing {len(linears)} layers to {bits}-bit, groups of {group_size}, on {device}")
    t0 = time.perf_counter()
    _quantize_and_pack(linears, bits, group_size, device, compressor.force_compression_format,
                       compress_module)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    compressor.quantization_config.quantization_status = QuantizationStatus.COMPRESSED
    notify(f"writing {staging}")
    model.save_pretrained(staging)
    compressor.update_config(str(staging))
    tokenizer.save_pretrained(staging)
    return {"quantized_layers": len(linears), "kept_layers": kept, "quantize_seconds": seconds}


def _quantize_and_pack(linears: list, bits: int, group_size: int, device: str, fmt,
                       compress_module) -> None:
    """Per layer: on ``device``, one scale per group (vectorised over all groups at once),
    then compressed-tensors rounds and packs the weights; the packed layer goes back to the
    host before the next one comes, so the GPU holds one layer at a time."""
    import torch

    qmax = 2 ** (bits - 1) - 0.5  # symmetric: amax maps to the edge of [-2^(b-1), 2^(b-1)-1]
    with torch.no_grad():
        for module in linears:
            module.to(device)
            w = module.weight.float()
            amax = w.reshape(w.shape[0], -1, group_size).abs().amax(dim=-1)
            module.weight_scale.copy_((amax.clamp(min=1e-8) / qmax).to(module.weight_scale.dtype))
            del w, amax
            compress_module(module, fmt)  # quantize (round, clamp) and pack where the layer is
            module.to("cpu")


def _load(source: Path, dtype: str, device: str, notify):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    notify(f"loading {source}")
    try:
        if is_random_model(str(source)):  # a production shape: seeded random weights, quantized
            config = AutoConfig.from_pretrained(source)  # for real, so vLLM's kernels can be timed
            where = _random_init_device(config, dtype, device)
            torch.manual_seed(0)
            with torch.device(where):
                model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype))
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelPrepError(f"Cannot load {str(source)!r} to export it: {exc}. Name a local "
                             "Hugging Face model folder.") from exc
    return model, tokenizer


def _random_init_device(config, dtype: str, device: str) -> str:
    """Where to draw a random-weights model: on the GPU when it fits in 80% of the free memory
    (drawing 8B weights on the CPU took ~5 min of a 16-core host, on the H200 seconds); the
    values differ from the CPU's, which does not matter for a speed-only model."""
    import torch
    from transformers import AutoModelForCausalLM

    if device != "cuda":
        return "cpu"
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    need = sum(p.numel() * p.element_size() for p in shell.parameters())
    return "cuda" if need < 0.8 * torch.cuda.mem_get_info()[0] else "cpu"
