"""Exporting a compressed-tensors W4A16/W8A16 checkpoint (engine/export.py): the format vLLM
reads, refusals that say what to change, never a half-written folder. Serving the export
with vLLM is in tests/test_vllm_backend.py."""
from __future__ import annotations

import json
from importlib.util import find_spec

import pytest
from safetensors import safe_open

from engine.errors import SpecError
from engine.export import EXPORT_MARKER, check_export, export_quantized
from engine.model_prep import resolve_model

needs_ct = pytest.mark.skipif(find_spec("compressed_tensors") is None,
                              reason="compressed-tensors comes with vLLM: make vllm")


@pytest.mark.parametrize(("bits", "group", "dtype", "says"), [
    (3, 64, "bfloat16", "4 or 8"), (4, 48, "bfloat16", "power of two"),
    (4, 64, "float32", "bfloat16 or float16")])
def test_bad_settings_are_refused_with_the_fix(bits, group, dtype, says) -> None:
    with pytest.raises(SpecError, match=says):
        check_export(bits, group, dtype)


@needs_ct
@pytest.mark.parametrize("bits", [4, 8])
def test_export_writes_packed_integer_weights_and_the_config_vllm_reads(model_settings, tmp_path,
                                                                         bits) -> None:
    src = resolve_model("random:tiny-llama", model_settings)
    out = tmp_path / f"w{bits}"
    report = export_quantized(src, out, bits=bits, group_size=16)
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "pack-quantized"
    w = q["config_groups"]["group_0"]["weights"]
    assert (w["num_bits"], w["group_size"], w["symmetric"]) == (bits, 16, True)
    assert q["ignore"] == ["lm_head"] and report.kept_layers == ["lm_head"]
    assert report.quantized_layers == 2 * 7  # q, k, v, o, gate, up, down per layer
    with safe_open(str(next(out.glob("*.safetensors"))), "pt") as f:
        keys = set(f.keys())
        packed = f.get_tensor("model.layers.0.mlp.down_proj.weight_packed")
        scale = f.get_tensor("model.layers.0.mlp.down_proj.weight_scale")
    assert "model.layers.0.mlp.down_proj.weight" not in keys  # only the packed form is stored
    # down_proj: 64 x 128 weights; int32 words hold 32 / bits values; one scale per 16 inputs
    assert tuple(packed.shape) == (64, 128 * bits // 32) and tuple(scale.shape) == (64, 8)
    assert json.loads((out / EXPORT_MARKER).read_text())["bits"] == bits
    assert (out / "tokenizer.json").is_file()
    assert not list(tmp_path.glob(".*staging"))
    # still a random-weights model (speed only), but vLLM must load these weights, not dummies
    from engine.backends.vllm_backend import engine_args
    from engine.model_prep import is_random_model
    from engine.specs import VariantSpec

    assert is_random_model(str(out))
    spec = VariantSpec(name="w", model=str(out), backend="vllm", dtype="bfloat16")
    assert "load_format" not in engine_args(spec, str(out), "cuda")
    assert engine_args(spec, str(src), "cuda")["load_format"] == "dummy"


@needs_ct
def test_export_never_overwrites_or_leaves_a_partial_folder(model_settings, tmp_path) -> None:
    src = resolve_model("random:tiny-llama", model_settings)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(SpecError, match="not empty"):
        export_quantized(src, taken)
    assert (taken / "keep.txt").read_text() == "mine"
    with pytest.raises(SpecError, match="does not divide"):  # tiny-llama widths: 64 and 128
        export_quantized(src, tmp_path / "new", group_size=256)
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".*staging"))
