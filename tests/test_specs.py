"""Variant and pilot specs: serialisable, strict, with errors that say what to fix."""
from __future__ import annotations

import pytest

from engine.backends import get_backend
from engine.core.errors import BackendError, ModelPrepError, SpecError
from engine.models.prep import resolve_model
from engine.specs.pilot import (
    CompressPrompt,
    PilotSpec,
    QuantizeWeights,
    default_variants,
    parse_pilot_spec,
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
