"""Export a weight-quantized checkpoint that vLLM serves natively (compressed-tensors format).

The transformers backend quantizes weights in memory (torchao, quanto, bitsandbytes, HQQ);
vLLM instead loads a checkpoint that is already quantized and picks its own kernels for it
(Marlin/Machete on NVIDIA GPUs, oneDNN on CPU). ``export_quantized`` writes such a checkpoint:
every Linear layer except the LM head gets group-wise symmetric round-to-nearest integer
weights (``bits`` = 4 or 8, one scale per ``group_size`` input columns, the scheme of the
in-memory int4/int8 techniques) packed in the ``compressed-tensors`` "pack-quantized" layout
(W4A16 / W8A16: activations stay in the model dtype). The folder is a normal Hugging Face
model folder: give it as a vLLM variant's ``model`` and vLLM reads the method from its
``config.json`` (``quantization_config.quant_method = "compressed-tensors"``).

Written to a staging folder first and renamed into place, so an interrupted export never
leaves a half-written checkpoint that a later pilot would load.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import ModelPrepError, SpecError
from engine.model_prep import RANDOM_MARKER, is_random_model

BITS = (4, 8)
DTYPES = ("bfloat16", "float16")  # vLLM's CPU and GPU W4A16/W8A16 kernels take these
EXPORT_MARKER = "roilab_export.json"


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
    seconds: float


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def check_export(bits: int, group_size: int, dtype: str) -> None:
    if bits not in BITS:
        raise SpecError(f"bits={bits}: export writes {' or '.join(map(str, BITS))}-bit weights "
                        "(W4A16 / W8A16, which vLLM serves on CPU and GPU).")
    if group_size < 8 or group_size & (group_size - 1):
        raise SpecError(f"group_size={group_size}: use a power of two of at least 8 "
                        "(32, 64 and 128 are usual).")
    if dtype not in DTYPES:
        raise SpecError(f"dtype={dtype!r}: the exported model runs in {' or '.join(DTYPES)} "
                        "(vLLM's quantized kernels take no float32 activations).")


def export_quantized(model_dir: str | Path, out_dir: str | Path, bits: int = 4,
                     group_size: int = 64, dtype: str = "bfloat16",
                     progress=None) -> ExportReport:
    """Quantize ``model_dir`` (a local Hugging Face folder) into ``out_dir``; see the module doc.

    ``progress(message)`` is called at each stage. SpecError for bad settings or a model whose
    layer widths are not multiples of ``group_size``; ModelPrepError when the model can't load.
    """
    check_export(bits, group_size, dtype)
    notify = progress or (lambda _m: None)
    source, target = Path(model_dir), Path(out_dir)
    if target.exists() and any(target.iterdir()):
        raise SpecError(f"{target} exists and is not empty; name a new folder (nothing was "
                        "overwritten).")
    import torch

    try:
        from compressed_tensors.compressors import ModelCompressor
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
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from engine.techniques._quant_backends import check_group_size, is_decoder_linear

    t0 = time.perf_counter()
    notify(f"loading {source}")
    try:
        if is_random_model(str(source)):  # a production shape: seeded random weights, quantized
            torch.manual_seed(0)           # for real, so vLLM's quantized kernels can be timed
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source),
                                                     dtype=getattr(torch, dtype))
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype))
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelPrepError(f"Cannot load {str(source)!r} to export it: {exc}. Name a local "
                             "Hugging Face model folder.") from exc
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
    notify(f"quantizing {len(linears)} layers to {bits}-bit, groups of {group_size}")
    qmax = 2 ** (bits - 1) - 0.5  # symmetric: amax maps to the edge of [-2^(b-1), 2^(b-1)-1]
    with torch.no_grad():
        for module in linears:
            w = module.weight.float()
            amax = w.reshape(w.shape[0], -1, group_size).abs().amax(dim=-1)
            module.weight_scale.copy_((amax.clamp(min=1e-8) / qmax).to(module.weight_scale.dtype))
    notify("packing")
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    compressor.compress_model(model)
    staging = target.parent / f".{target.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        notify(f"writing {target}")
        model.save_pretrained(staging)
        compressor.update_config(str(staging))
        tokenizer.save_pretrained(staging)
        for extra in ("generation_config.json", "chat_template.jinja", RANDOM_MARKER):
            if (source / extra).is_file() and not (staging / extra).exists():
                shutil.copyfile(source / extra, staging / extra)
        report = ExportReport(
            source=str(source), target=str(target), bits=bits, group_size=group_size,
            dtype=dtype, format="compressed-tensors/pack-quantized",
            quantized_layers=len(linears),
            kept_layers=kept,
            source_bytes=_folder_bytes(source), target_bytes=_folder_bytes(staging),
            seconds=round(time.perf_counter() - t0, 2))
        (staging / EXPORT_MARKER).write_text(json.dumps(asdict(report), indent=1))
        if target.exists():
            target.rmdir()  # empty, checked above
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    notify("done")
    return report
