"""The embedded model is converted once, checked on reuse, and loads as a real model."""
from __future__ import annotations

import json

import pytest

from engine.models.prep import _MARKER, EMBEDDED_NAME, _is_complete


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
    leftovers = [p.name for p in settings.models_dir.iterdir()
                 if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert not leftovers, leftovers


@pytest.mark.slow
def test_pilots_converting_the_embedded_model_at_once_convert_it_once(tmp_path, monkeypatch,
                                                                      embedded_model_dir):
    """Three Ray pilots on a fresh data dir each found no embedded model, converted it side by
    side and removed each other's finished folder while it was read (CI: "Couldn't
    instantiate the backend tokenizer"). Under the lock one converts and the others wait and
    reuse it. The wheel download is stubbed (no index in tests) and the conversion copies
    the real converted folder slowly, so the processes overlap on demand."""
    import shutil
    import time
    from concurrent.futures import ThreadPoolExecutor

    from conftest import make_settings
    from transformers import AutoTokenizer

    from engine.models import prep

    settings = make_settings(tmp_path / "data", None)
    conversions = []

    def slow_convert(gguf, out):
        conversions.append(out)
        out.mkdir()
        for f in sorted(embedded_model_dir.iterdir()):
            shutil.copyfile(f, out / f.name)
            time.sleep(0.05)

    monkeypatch.setattr(prep, "_extract_gguf", lambda tmp: tmp / "model.gguf")
    monkeypatch.setattr(prep, "_convert", slow_convert)

    def prepare_and_load(_):
        folder = prep.prepare_embedded_model(settings)
        return folder, len(AutoTokenizer.from_pretrained(folder))

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(prepare_and_load, range(3)))
    assert len(conversions) == 1
    assert {folder for folder, _ in got} == {settings.models_dir / EMBEDDED_NAME}
    assert {n for _, n in got} == {49152}
    assert prep._is_complete(settings.models_dir / EMBEDDED_NAME)
