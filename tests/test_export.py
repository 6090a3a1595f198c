"""Exporting a compressed-tensors W4A16/W8A16 checkpoint (engine/export/compressed.py, export_gptq.py):
the format vLLM reads, round-to-nearest on the CPU or GPU, GPTQ calibrated on a workload's
held-out requests, refusals that say what to change, never a half-written folder. Serving the
export with vLLM is in tests/test_vllm_backend.py; accuracy in bench/bench_export.py."""
from __future__ import annotations

import json
from importlib.util import find_spec

import pytest
import torch
from safetensors import safe_open

from engine.core.errors import ModelPrepError, SpecError
from engine.core.settings import REPO_ROOT, Settings
from engine.export.compressed import (
    EXPORT_MARKER,
    calibration_set,
    check_export,
    export_device,
    export_quantized,
)
from engine.models.prep import resolve_model

needs_ct = pytest.mark.skipif(find_spec("compressed_tensors") is None,
                              reason="compressed-tensors comes with vLLM: make vllm")
SUPPORT_CHAT = REPO_ROOT / "data" / "samples" / "support_chat.jsonl"  # 35 requests


def _tensors(folder) -> dict[str, torch.Tensor]:
    with safe_open(str(next(folder.glob("*.safetensors"))), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _quant_config(folder) -> dict:
    return json.loads((folder / "config.json").read_text())["quantization_config"]


def _ingest(store, path=SUPPORT_CHAT) -> int:
    from engine.ingest.logs import parse_log

    raw = path.read_bytes()
    return store.add_workload("w", path.name, raw, parse_log(raw, path.name)).id


@pytest.mark.parametrize(("bits", "group", "dtype", "method", "says"), [
    (3, 64, "bfloat16", "rtn", "4 or 8"), (4, 48, "bfloat16", "rtn", "power of two"),
    (4, 64, "float32", "rtn", "bfloat16 or float16"), (4, 64, "bfloat16", "awq", "'gptq'")])
def test_bad_settings_are_refused_with_the_fix(bits, group, dtype, method, says) -> None:
    with pytest.raises(SpecError, match=says):
        check_export(bits, group, dtype, method)


def test_auto_takes_the_gpu_when_one_is_visible_and_cuda_without_one_is_refused() -> None:
    assert export_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert export_device("auto") == export_device("cuda") == "cuda"
    else:
        assert export_device("auto") == "cpu"
        with pytest.raises(SpecError, match="no GPU is visible.*--device auto or cpu"):
            export_device("cuda")
    with pytest.raises(SpecError, match="auto, cpu or cuda"):
        export_device("tpu")


@needs_ct
@pytest.mark.skipif(torch.cuda.is_available(), reason="refusal of CUDA on a machine without one")
@pytest.mark.slow  # needs the embedded model (a random: shape takes its tokenizer)
def test_export_on_cuda_without_a_gpu_is_refused_before_anything_is_written(model_settings,
                                                                          tmp_path) -> None:
    src = resolve_model("random:tiny-llama", model_settings)
    with pytest.raises(SpecError, match="no GPU is visible"):
        export_quantized(src, tmp_path / "w", group_size=16, device="cuda")
    assert not (tmp_path / "w").exists() and not list(tmp_path.glob(".*staging"))


@needs_ct
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.slow  # needs the embedded model (a random: shape takes its tokenizer)
def test_export_writes_packed_integer_weights_and_the_config_vllm_reads(model_settings, tmp_path,
                                                                         bits) -> None:
    src = resolve_model("random:tiny-llama", model_settings)
    out = tmp_path / f"w{bits}"
    report = export_quantized(src, out, bits=bits, group_size=16, device="cpu")
    q = _quant_config(out)
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "pack-quantized"
    w = q["config_groups"]["group_0"]["weights"]
    assert (w["num_bits"], w["group_size"], w["symmetric"]) == (bits, 16, True)
    assert q["ignore"] == ["lm_head"] and report.kept_layers == ["lm_head"]
    assert report.quantized_layers == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert (report.method, report.device, report.calibration_samples) == ("rtn", "cpu", 0)
    tensors = _tensors(out)
    packed = tensors["model.layers.0.mlp.down_proj.weight_packed"]
    scale = tensors["model.layers.0.mlp.down_proj.weight_scale"]
    assert "model.layers.0.mlp.down_proj.weight" not in tensors  # only the packed form is stored
    # down_proj: 64 x 128 weights; int32 words hold 32 / bits values; one scale per 16 inputs
    assert tuple(packed.shape) == (64, 128 * bits // 32) and tuple(scale.shape) == (64, 8)
    assert json.loads((out / EXPORT_MARKER).read_text())["bits"] == bits
    assert (out / "tokenizer.json").is_file()
    assert not list(tmp_path.glob(".*staging"))
    # still a random-weights model (speed only), but vLLM must load these weights, not dummies
    from engine.backends.vllm_engines import engine_args
    from engine.models.prep import is_random_model
    from engine.specs.pilot import VariantSpec

    assert is_random_model(str(out))
    spec = VariantSpec(name="w", model=str(out), backend="vllm", dtype="bfloat16")
    assert "load_format" not in engine_args(spec, str(out), "cuda")
    assert engine_args(spec, str(src), "cuda")["load_format"] == "dummy"


@pytest.fixture(scope="module")
def embedded_rtn(embedded_model_dir, tmp_path_factory):
    """The embedded model's RTN export, 4-bit in groups of 64 on the CPU, and its report:
    made once for the module, read (never changed) by the RTN and GPTQ tests."""
    out = tmp_path_factory.mktemp("embedded-rtn") / "rtn"
    return out, export_quantized(embedded_model_dir, out, bits=4, group_size=64, device="cpu")


@needs_ct
@pytest.mark.slow
def test_rtn_integers_are_round_to_nearest_of_the_group_scale(embedded_model_dir,
                                                               embedded_rtn) -> None:
    """Real weights: every packed integer is round(w / scale) with scale = max|w| / 7.5 per
    group of 64, the scheme the RTN export has always written (unpacked independently)."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from transformers import AutoModelForCausalLM

    out, _ = embedded_rtn
    tensors = _tensors(out)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.bfloat16)
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.29.mlp.down_proj"):
        w = model.get_submodule(name).weight.detach()
        rows, cols = w.shape
        groups = w.float().reshape(rows, cols // 64, 64)
        scale = (groups.abs().amax(-1).clamp(min=1e-8) / 7.5).to(torch.bfloat16)
        assert torch.equal(tensors[f"{name}.weight_scale"], scale)
        want = (groups.to(torch.bfloat16) / scale[..., None]).round().clamp(-8, 7)
        got = unpack_from_int32(tensors[f"{name}.weight_packed"], 4, torch.Size([rows, cols]))
        assert torch.equal(got.reshape(rows, cols // 64, 64).to(torch.bfloat16), want)


@needs_ct
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.slow  # needs the embedded model (a random: shape takes its tokenizer)
def test_export_on_the_gpu_writes_the_same_bytes_as_on_the_cpu(tmp_path) -> None:
    """A saved (not random) model: weights come from disk, each layer quantized on the GPU."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    shape = resolve_model("random:tiny-llama", Settings(data_dir=REPO_ROOT / "data"))
    torch.manual_seed(0)
    src = tmp_path / "src"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape)).save_pretrained(src)
    AutoTokenizer.from_pretrained(shape).save_pretrained(src)
    on_cpu = export_quantized(src, tmp_path / "cpu", group_size=16, device="cpu")
    on_gpu = export_quantized(src, tmp_path / "gpu", group_size=16, device="auto")
    assert (on_cpu.device, on_gpu.device) == ("cpu", "cuda")
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "cpu" / name).read_bytes() == (tmp_path / "gpu" / name).read_bytes()


@needs_ct
@pytest.mark.slow  # needs the embedded model (a random: shape takes its tokenizer)
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


def test_calibration_is_the_held_out_requests_or_says_it_is_the_evaluated_ones(store) -> None:
    wid = _ingest(store)
    ids = [r.id for r in store.get_requests(wid)]
    held = calibration_set(store, wid, max_requests=30, samples=3)
    assert (held.request_ids, held.is_eval_set) == (ids[30:33], False)
    assert held.messages[0] == list(store.get_requests(wid)[30].request.messages)
    every = calibration_set(store, wid, max_requests=None, samples=100)  # a default pilot
    assert (every.request_ids, every.is_eval_set) == (ids, True)
    with pytest.raises(SpecError, match="roilab ingest"):
        calibration_set(store, wid + 1, None, 8)
    with pytest.raises(SpecError, match="at least 1"):
        calibration_set(store, wid, None, 0)


@pytest.mark.slow  # needs the embedded model (a random: shape takes its tokenizer)
def test_gptq_is_refused_without_a_workload_or_on_random_weights(model_settings,
                                                                 tmp_path) -> None:
    real = resolve_model("embedded:smollm2-135m-instruct", model_settings)
    with pytest.raises(SpecError, match="--workload ID"):
        export_quantized(real, tmp_path / "g", method="gptq", device="cpu")
    with pytest.raises(SpecError, match="--method rtn"):
        export_quantized(resolve_model("random:tiny-llama", model_settings), tmp_path / "g",
                         method="gptq", device="cpu")
    assert not (tmp_path / "g").exists()


@pytest.mark.slow  # needs the embedded model (a random: shape takes its tokenizer)
def test_cli_export_refuses_gptq_without_workload_and_workload_without_gptq(
        model_settings, monkeypatch, tmp_path, capsys) -> None:
    from engine.cli.main import main

    monkeypatch.setenv("ROILAB_DATA_DIR", str(model_settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", model_settings.resolved_db_url())
    assert main(["export", "-o", str(tmp_path / "g"), "--method", "gptq"]) == 2
    assert "pass --workload ID" in capsys.readouterr().err
    assert main(["export", "-o", str(tmp_path / "g"), "--workload", "1"]) == 2
    assert "add --method gptq" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


@pytest.mark.slow  # needs the embedded model (a random: shape takes its tokenizer)
def test_gptq_without_llmcompressor_says_how_to_install_it(store, model_settings, tmp_path,
                                                           monkeypatch) -> None:
    import engine.export.gptq as gptq

    if find_spec("llmcompressor") is not None:
        pytest.skip("llmcompressor is importable in this environment itself")
    monkeypatch.setattr(gptq, "side_folder", lambda: tmp_path / "no-such-folder")
    calibration = calibration_set(store, _ingest(store), None, 2)
    with pytest.raises(ModelPrepError, match="make gptq"):
        export_quantized(resolve_model("embedded:smollm2-135m-instruct", model_settings),
                         tmp_path / "g", method="gptq", device="cpu", calibration=calibration)


@needs_ct
@pytest.mark.slow
def test_gptq_writes_the_rtn_format_calibrated_on_held_out_requests(embedded_model_dir, store,
                                                                    embedded_rtn,
                                                                    tmp_path) -> None:
    """GPTQ through llmcompressor on the real embedded model (2 held-out requests; ~1.5 min
    on 2 CPU cores, most of it GPTQ's column-by-column solve of each of the 210 layers, which
    no calibration size shortens): the same compressed-tensors checkpoint as RTN, other
    integers."""
    wid = _ingest(store)
    ids = [r.id for r in store.get_requests(wid)]
    # 2 held out of 35 (more requests only lengthen each layer's calibration forward passes)
    calibration = calibration_set(store, wid, max_requests=33, samples=8)
    gptq = export_quantized(embedded_model_dir, tmp_path / "gptq", bits=4, group_size=64,
                            device="cpu", method="gptq", calibration=calibration)
    rtn_dir, rtn = embedded_rtn
    marker = json.loads((tmp_path / "gptq" / EXPORT_MARKER).read_text())
    assert (marker["method"], marker["calibration_samples"]) == ("gptq", 2)
    assert marker["calibration_request_ids"] == ids[33:] and not marker["calibration_is_eval_set"]
    assert marker["calibration_workload"] == wid and gptq.format == rtn.format
    assert (gptq.quantized_layers, gptq.kept_layers) == (rtn.quantized_layers, rtn.kept_layers)
    g, r = _quant_config(tmp_path / "gptq"), _quant_config(rtn_dir)
    for key in ("quant_method", "format", "quantization_status", "ignore"):
        assert g[key] == r[key], key
    keys = ("num_bits", "type", "symmetric", "strategy", "group_size")
    gw, rw = g["config_groups"]["group_0"]["weights"], r["config_groups"]["group_0"]["weights"]
    assert [gw[k] for k in keys] == [rw[k] for k in keys] == [4, "int", True, "group", 64]
    gt, rt = _tensors(tmp_path / "gptq"), _tensors(rtn_dir)
    assert {k: (v.shape, v.dtype) for k, v in gt.items()} == \
        {k: (v.shape, v.dtype) for k, v in rt.items()}
    packed = [k for k in gt if k.endswith("weight_packed")]
    assert len(packed) == 210 and sum(not torch.equal(gt[k], rt[k]) for k in packed) > 200
    assert gt["model.layers.0.mlp.down_proj.weight_packed"].shape == (576, 1536 * 4 // 32)
