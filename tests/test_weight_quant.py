"""Weight quantization through torchao, optimum-quanto, bitsandbytes and HQQ on the real model.

Each method is applied to a copy of the real SmolLM2 (loaded once for the module); what the
report says is checked against the model's own stored tensors.
"""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from engine.core.errors import SpecError
from engine.core.memory import model_weight_bytes
from engine.techniques import TechniqueSpec
from engine.techniques import weight_quant as wq
from engine.techniques.weight_quant import QuantizeWeights

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
DECODER_LINEARS = 30 * 7  # 30 decoder layers x (q, k, v, o, gate, up, down)
HQQ_LAYERS = 2  # HQQ's optimiser needs minutes per 30 layers on 2 busy cores: see below
ANSWERS = {("torchao", 8), ("quanto", 8)}  # 8-bit weight-only: the greedy answer is kept

# (method, bits) -> expected bits per stored weight, scales and zero points included
CPU_RUNS = {
    ("torchao", 8): (8.0, 8.1),  # int8 + one fp32 scale and int8 zero point per row
    ("torchao", 4): (8.5, 8.7),  # int4 values kept one per int8 byte on CPU (Intx, unpacked)
    ("quanto", 8): (8.0, 8.1),
    ("quanto", 4): (4.9, 5.1),  # 4-bit packed two per byte + fp32 scale and shift per 64
    ("bnb", 8): (8.0, 8.1),
    # NF4 + an absmax per 64: double-quantized (4.14) until bitsandbytes repacks the weights
    # for its AVX512-BF16 CPU kernel at the first forward, with a bf16 absmax (4.25)
    ("bnb", 4): (4.1, 4.3),
    ("hqq", 8): (8.0, 8.2),
    ("hqq", 4): (4.9, 5.1),
}


def _decoder_linears(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and "lm_head" not in n]


@pytest.fixture(scope="module")
def base(embedded_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    return model, tok


def _copy(model: torch.nn.Module, layers: int | None = None) -> torch.nn.Module:
    """A deep copy, optionally of the first ``layers`` decoder layers only."""
    if layers is None:
        return copy.deepcopy(model)
    full = model.model.layers
    model.model.layers = torch.nn.ModuleList(full[:layers])
    try:
        small = copy.deepcopy(model)
    finally:
        model.model.layers = full
    small.config.num_hidden_layers = layers
    return small


def _answer(model, tok, max_new_tokens: int) -> str:
    text = tok.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():  # as the backend generates (quanto int4 refuses inference_mode)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module", params=sorted(CPU_RUNS), ids=lambda p: f"{p[0]}-{p[1]}bit")
def quantized(request, base):
    method, bits = request.param
    model, tok = base
    # HQQ runs its half-quadratic optimiser on every group: on this 2-core box it took 150 s
    # (4-bit) and 650 s (8-bit) for all 210 linears, so the test quantizes a 2-layer copy of
    # the real model (the full model ran outside the suite, with the same report).
    small = HQQ_LAYERS if method == "hqq" else None
    work = _copy(model, small)
    before = model_weight_bytes(work)
    linears = len(_decoder_linears(work))
    report = wq.apply(work, QuantizeWeights(method=method, bits=bits))
    text = _answer(work, tok, max_new_tokens=8 if (method, bits) in ANSWERS else 4)
    yield method, bits, work, report, before, linears, text
    del work


@pytest.mark.slow
def test_every_decoder_linear_is_quantized_and_counted_from_the_model(quantized) -> None:
    method, bits, model, rep, before, linears, _ = quantized
    assert linears == (HQQ_LAYERS * 7 if method == "hqq" else DECODER_LINEARS)
    assert rep["decoder_linears"] == linears
    assert rep["layers_quantized"] == linears, rep
    assert rep["bits"] == bits and rep["device"] == "cpu" and rep["seconds"] > 0
    # no plain fp32 linear is left in the decoder: each was swapped or wrapped by the library
    plain = [m for m in _decoder_linears(model) if type(m) is torch.nn.Linear
             and type(m.weight) is torch.nn.Parameter and m.weight.dtype == torch.float32]
    assert plain == []


@pytest.mark.slow
def test_bits_per_weight_and_bytes_are_read_from_the_stored_tensors(quantized) -> None:
    method, bits, model, rep, before, _, _ = quantized
    # recount from the model: every quantized layer's stored bytes (incl. scales) per weight
    layers = [m for n, m in model.named_modules()
              if "lm_head" not in n and n.rsplit(".", 1)[-1].endswith("_proj")]
    n_weights = sum(m.in_features * m.out_features for m in layers)
    n_bytes = sum(model_weight_bytes(m) for m in layers)
    low, high = CPU_RUNS[(method, bits)]
    assert low <= 8 * n_bytes / n_weights <= high
    assert rep["bits_per_weight"] == pytest.approx(8 * n_bytes / n_weights, abs=0.01)
    assert rep["weight_bytes_before"] == before
    # the decoder's fp32 weights (4 bytes each) were replaced by the quantized bytes
    after = model_weight_bytes(model)
    assert rep["weight_bytes_after"] == pytest.approx(after, rel=0.005)
    assert after == pytest.approx(before - 4 * n_weights + n_bytes, rel=0.005)
    if method != "hqq":  # the full model: 538 MB fp32, of which 113 MB is the fp32 embedding
        assert after / before < (0.42 if high < 6 else 0.43)


@pytest.mark.slow
def test_the_report_names_the_kernels_that_ran(quantized) -> None:
    method, bits, _, rep, _, _, _ = quantized
    kernels = rep["kernels"]
    assert kernels["ops"] and kernels["path"]
    expected_type = {("torchao", 8): "Int8Tensor", ("torchao", 4): "IntxUnpackedToInt8Tensor",
                     ("quanto", 8): "WeightQBytesTensor", ("quanto", 4): "WeightQBitsTensor",
                     ("bnb", 8): "Int8Params", ("bnb", 4): "Params4bit",
                     ("hqq", 8): "HQQLinear", ("hqq", 4): "HQQLinear"}[(method, bits)]
    assert rep["weight_type"] == expected_type
    if method == "bnb":  # bitsandbytes' CPU kernels: torch._int_mm for int8, gemv_4bit for NF4
        assert rep["backend"].startswith("native library libbitsandbytes_cpu")
        fused = "aten::_int_mm" if bits == 8 else "bitsandbytes::gemv_4bit"
        avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"  # where bnb has them
        if (bits == 8 and avx512) or "avx512bf16_for_cpu=True" in rep["backend"]:
            assert fused in kernels["ops"] and kernels["path"].startswith("fused")
    else:  # torchao, quanto (fp32) and HQQ turn the weights back into floats on CPU
        assert kernels["path"].startswith("dequantize-then-matmul fallback")
    if method == "hqq":
        assert rep["backend"] == "HQQLinear.backend=PYTORCH"


@pytest.mark.slow
def test_the_quantized_model_still_answers(quantized) -> None:
    method, bits, _, _, _, _, text = quantized
    assert text.strip()
    # 8-bit weight-only keeps the greedy answer; bitsandbytes' LLM.int8() also quantizes the
    # activations and changes it; the 2-layer HQQ copy is not a whole model.
    if (method, bits) in ANSWERS:
        assert "Paris" in text


# --- the spec and check(): fast, no model --------------------------------------------------

def test_stored_specs_from_before_4_bit_still_parse() -> None:
    spec = TypeAdapter(TechniqueSpec).validate_python({"kind": "quantize_weights", "bits": 8,
                                                       "method": "torchao"})
    assert spec == QuantizeWeights() and spec.group_size == 64
    assert wq.describe(QuantizeWeights(bits=4, method="bnb")) == \
        "4-bit weights (bitsandbytes, groups of 64)"


def test_group_size_is_refused_for_8_bit() -> None:
    with pytest.raises(ValidationError, match="group_size applies to 4-bit weights"):
        QuantizeWeights(bits=8, group_size=128)
    with pytest.raises(ValidationError):
        QuantizeWeights(bits=4, group_size=96)


def test_a_missing_library_is_refused_with_the_install_line(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(wq.importlib.util, "find_spec",
                        lambda name, *a: None if name == "hqq" else real(name, *a))
    with pytest.raises(SpecError) as exc:
        wq.check(QuantizeWeights(bits=4, method="hqq"), "cpu")
    assert str(exc.value) == ("4-bit weights with HQQ need it installed: "
                              "pip install 'hqq==0.2.8.post1'.")


@pytest.mark.parametrize("method,bits", sorted(CPU_RUNS))
def test_every_method_and_width_passes_check_on_cpu(method, bits) -> None:
    wq.check(QuantizeWeights(method=method, bits=bits), "cpu")


def test_torchao_4_bit_on_a_gpu_older_than_ampere_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    with pytest.raises(SpecError) as exc:
        wq.check(QuantizeWeights(bits=4, method="torchao"), "cuda")
    assert str(exc.value) == (
        "4-bit torchao weights on CUDA use the tinygemm int4 kernel, which needs compute "
        "capability 8.0 or newer (this GPU has 7.5); use method 'bnb' or 'hqq' for 4-bit on "
        "this GPU, or run on CPU.")
    wq.check(QuantizeWeights(bits=8, method="torchao"), "cuda")  # int8 has no such limit
    wq.check(QuantizeWeights(bits=4, method="hqq"), "cuda")


def test_bitsandbytes_without_a_native_library_for_this_cuda_is_refused(monkeypatch) -> None:
    import bitsandbytes.cextension as cext

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(cext, "lib", object.__new__(cext.ErrorHandlerMockBNBNativeLibrary))
    with pytest.raises(SpecError, match="bitsandbytes found no native library for this torch's "
                                        "CUDA"):
        wq.check(QuantizeWeights(bits=4, method="bnb"), "cuda")


def test_a_group_size_that_does_not_tile_the_rows_is_refused_before_quantizing() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(576, 192), torch.nn.Linear(1536, 576))
    with pytest.raises(SpecError) as exc:  # torchao and bitsandbytes would fail on 576 / 128
        wq.apply(model, QuantizeWeights(bits=4, method="bnb", group_size=128))
    assert str(exc.value) == ("group_size 128 does not divide the input width of every linear "
                              "layer (576, 1536): use group_size 64.")
    assert all(type(m.weight) is torch.nn.Parameter for m in model)  # left untouched
