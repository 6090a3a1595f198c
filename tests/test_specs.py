"""Variant and pilot specs: serialisable, strict, with errors that say what to fix."""
from __future__ import annotations

from datetime import datetime

import pytest

from engine.backends import get_backend
from engine.core.domain import Run, Status, VariantRun
from engine.core.errors import BackendError, ModelPrepError, SpecError
from engine.models.prep import resolve_model
from engine.specs.pilot import (
    DEFAULT_PILOT,
    CompressPrompt,
    CostSettings,
    GenerationSettings,
    PilotSpec,
    QuantizeWeights,
    VariantSpec,
    default_pilot_variants,
    default_variants,
    parse_pilot_spec,
    pilot_variants,
    variant_generation,
)


def test_pilot_spec_round_trips_through_json() -> None:
    spec = PilotSpec(workload_id=3, variants=default_variants(), max_requests=12)
    again = parse_pilot_spec(spec.model_dump(mode="json"))
    assert again == spec
    assert isinstance(again.variants[1].techniques[0], QuantizeWeights)
    assert isinstance(again.variants[2].techniques[0], CompressPrompt)
    assert again.baseline.name == "baseline"


@pytest.mark.parametrize("data, needle", [
    ({"workload_id": 1, "variants": []}, "variants"),
    ({"workload_id": 1, "variants": [{"name": "a", "colour": "red"}]}, "colour"),
    ({"workload_id": 1, "variants": [{"name": "a"}, {"name": "a"}]}, "unique"),
    ({"workload_id": 1, "variants": [{"name": "a", "techniques": [{"kind": "magic"}]}]}, "kind"),
    ({"workload_id": 1, "variants": [{"name": "a", "techniques": [
        {"kind": "compress_prompt", "rate": 1.5}]}]}, "rate"),
    ({"workload_id": 1, "variants": [{"name": "a", "techniques": [
        {"kind": "quantize_weights"}, {"kind": "quantize_weights"}]}]}, "twice"),
])
def test_invalid_specs_are_refused_with_the_field_named(data, needle) -> None:
    with pytest.raises(SpecError, match=needle):
        parse_pilot_spec(data)


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(BackendError, match="known backends: endpoint, transformers, vllm"):
        get_backend("tgi")


def test_model_names_resolve_or_say_how_to_fix(settings, tmp_path) -> None:
    with pytest.raises(ModelPrepError, match="embedded model is"):
        resolve_model("embedded:llama-9000", settings)
    with pytest.raises(ModelPrepError, match="does not exist"):
        resolve_model("./no/such/folder", settings)
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelPrepError, match="no config.json"):
        resolve_model(str(tmp_path / "m"), settings)
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "m"), settings) == str((tmp_path / "m").resolve())
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", settings) == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"


# A pilot spec as an early roilab stored it: generation settings flat at the top, variants
# without the fields added since (compile, batch_size, vllm, endpoint; a technique without
# group_size), and a key this version no longer has.
OLD_STORED = {"name": "old pilot", "workload_id": 4, "max_new_tokens": 16,
              "variants": [{"name": "baseline", "model": "embedded:smollm2-135m-instruct",
                            "technique": "baseline"},
                           {"name": "int8", "techniques": [{"kind": "quantize_weights",
                                                            "bits": 8, "method": "torchao"}]}]}


def test_an_old_stored_spec_reads_back_with_todays_defaults() -> None:
    spec = PilotSpec.from_stored(OLD_STORED)
    assert spec.generation == GenerationSettings(max_new_tokens=16)  # moved into its object
    assert spec.generation.batch_size == GenerationSettings().batch_size == 8  # one default
    assert spec.cost == CostSettings()
    assert [v.name for v in spec.variants] == ["baseline", "int8"]
    int8 = spec.variants[1]
    assert (int8.compile, int8.batch_size, int8.vllm) == (False, None, None)
    assert int8.techniques == (QuantizeWeights(bits=8, method="torchao", group_size=64),)
    assert VariantSpec.from_stored(OLD_STORED["variants"][0]) == VariantSpec(name="baseline")


def test_a_run_reads_its_spec_from_its_own_rows() -> None:
    """The variants come from the run's variant rows, the workload and name from the run
    where the stored JSON lacks them (stores hold runs whose spec JSON is {})."""
    variants = tuple(VariantRun(id=i, run_id=7, name=n, spec=s, status=Status("ok"))
                     for i, (n, s) in enumerate([("baseline", {"name": "baseline"}),
                                                 ("small", {"name": "small", "batch_size": 2})]))
    run = Run(id=7, workload_id=3, name="stored", spec={"cost": {"hardware": "nvidia-a10g"}},
              status=Status.DONE, created_at=datetime(2026, 1, 1), variants=variants)
    spec = PilotSpec.from_run(run)
    assert (spec.name, spec.workload_id, spec.cost.hardware) == ("stored", 3, "nvidia-a10g")
    assert [variant_generation(spec.generation, v).batch_size for v in spec.variants] == [8, 2]


def test_a_stored_spec_that_cannot_be_read_says_which_field() -> None:
    with pytest.raises(SpecError, match="stored PilotSpec.*variants.0.dtype"):
        PilotSpec.from_stored({"workload_id": 1, "variants": [{"name": "a", "dtype": "int3"}]})


def test_the_default_pilot_is_defined_once() -> None:
    """CLI flags, the dashboard form and `roilab demo` all build it with pilot_variants."""
    assert [v.name for v in default_pilot_variants()] == [
        "baseline", "int8-weights", "llmlingua-0.5"]
    assert default_pilot_variants() == pilot_variants(DEFAULT_PILOT)
    vllm = pilot_variants(["llmlingua", "fp8-kv", "fp8"], rate=0.3, model="m", backend="vllm")
    assert [v.name for v in vllm] == ["baseline", "fp8-weights", "fp8-kv-cache", "llmlingua-0.3"]
    assert {v.model for v in vllm} == {"m"} and vllm[2].vllm.kv_cache_dtype == "fp8"
    with pytest.raises(SpecError, match="int4.*known: int8, fp8, fp8-kv, llmlingua, prefix-cache, "
                                        "ngram-spec"):
        pilot_variants(["int4"])
