"""The embedded model is converted once, checked on reuse, and loads as a real model."""
from __future__ import annotations

import json

import pytest

from engine.models.prep import _MARKER, _is_complete


@pytest.mark.slow
def test_embedded_model_folder_is_complete_and_real(embedded_model_dir) -> None:
    assert _is_complete(embedded_model_dir)
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152
    assert "quantization_config" not in config  # saved as plain fp32, not GGUF-quantized
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "<|im_start|>user" in text


def test_a_truncated_or_partial_folder_is_not_reused(tmp_path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    assert not _is_complete(tmp_path)  # no marker: conversion never finished
    (tmp_path / _MARKER).write_text(json.dumps({"files": {"model.safetensors": 10}}))
    assert not _is_complete(tmp_path)  # size differs from what was written
    (tmp_path / _MARKER).write_text(json.dumps({"files": {"model.safetensors": 5}}))
    assert _is_complete(tmp_path)


@pytest.mark.slow
def test_pilots_preparing_one_random_model_at_once_all_get_a_whole_folder(tmp_path,
                                                                         embedded_model_dir):
    """Three pilots started at once (Ray jobs on one node) each prepare `random:tiny-llama`:
    the folder appears whole, by a rename, so none reads a tokenizer another is writing (a
    CI run failed one with "Couldn't instantiate the backend tokenizer")."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import make_settings
    from transformers import AutoTokenizer

    from engine.models.prep import prepare_random_model

    settings = make_settings(tmp_path / "data", embedded_model_dir)

    def prepare_and_load(_):
        folder = prepare_random_model("tiny-llama", settings)
        return folder, len(AutoTokenizer.from_pretrained(folder))

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(prepare_and_load, range(4)))
    assert len({folder for folder, _ in got}) == 1 and len({n for _, n in got}) == 1
    leftovers = [p.name for p in settings.models_dir.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers
