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
