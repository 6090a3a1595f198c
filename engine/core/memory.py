"""Memory accounting: weight bytes of (possibly quantized) models and peak RSS sampling."""
from __future__ import annotations

import ctypes
import gc
import threading

import psutil
import torch


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor really stores; quantized tensor subclasses are counted by their parts.

    torchao/quanto wrappers report the original dtype's element size, so
    ``get_memory_footprint()`` overcounts them; flattening to inner tensors counts the int8
    data and the scales actually held.
    """
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters the model holds and how many are non-zero (pruning leaves zeros in place).

    Quantized tensor subclasses are counted by their logical shape; tied weights once.
    """
    seen: set[int] = set()
    total = nonzero = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if not hasattr(p, "__tensor_flatten__"):
            nonzero += int(torch.count_nonzero(p.detach()))
        else:
            nonzero += p.numel()  # quantized storage: zeros are not tracked
    return {"parameters": total, "nonzero_parameters": nonzero}


def quantizer_side_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Scales that bitsandbytes and HQQ keep beside a layer's weight, outside its parameters
    and buffers, so neither ``parameters()`` nor ``get_memory_footprint()`` sees them."""
    found: list[torch.Tensor] = []
    weight = getattr(module, "weight", None)
    state = getattr(weight, "quant_state", None)  # bitsandbytes 4-bit: absmax per block
    while state is not None:
        found += [t for t in (state.absmax, state.code, getattr(state, "offset", None))
                  if isinstance(t, torch.Tensor)]
        state = getattr(state, "state2", None)  # nested (double-quantized) absmax
    # bitsandbytes 8-bit: one scale per row, on the weight until the first forward moves it
    # to the layer's matmul state
    for holder in (weight, getattr(module, "state", None)):
        scb = getattr(holder, "SCB", None)
        if isinstance(scb, torch.Tensor):
            found.append(scb)
    meta = getattr(module, "meta", None)  # HQQ: scale and zero per group
    if isinstance(meta, dict):
        found += [t for t in meta.values() if isinstance(t, torch.Tensor)]
    return list({id(t): t for t in found}.values())


def model_weight_bytes(model: torch.nn.Module) -> int:
    """Sum over unique parameters, buffers and quantizer scales (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        key = id(t)
        if key not in seen:
            seen.add(key)
            total += tensor_bytes(t.data if isinstance(t, torch.nn.Parameter) else t)
    side: set[tuple[int, int]] = set()
    for module in model.modules():
        for t in quantizer_side_tensors(module):
            if (t.data_ptr(), t.numel()) not in side:
                side.add((t.data_ptr(), t.numel()))
                total += tensor_bytes(t)
    return total


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS.

    glibc keeps freed chunks of a few MB (one linear layer's weights) in its heap, so after
    a quantizer drops the full-precision copies the process RSS would not go down and the
    variant's peak memory would include memory it no longer uses. ``malloc_trim`` returns
    them; elsewhere (no glibc) this only collects garbage.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def detach_from_checkpoint(model: torch.nn.Module) -> None:
    """Give plain CPU tensors their own memory so the memory-mapped checkpoint can close.

    from_pretrained maps the safetensors file; while any tensor (say the fp32 embedding a
    quantizer left alone) still views that mapping, every page the quantizer read stays
    resident and would be billed to the quantized variant's memory.
    """
    for module in model.modules():
        for _name, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if t.device.type == "cpu" and not hasattr(t, "__tensor_flatten__"):
                t.data = t.data.clone()


def reset_peak_rss() -> bool:
    """Reset this process's kernel peak-RSS mark (VmHWM) to its RSS now (Linux
    ``/proc/self/clear_refs``, value 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    """This process's peak RSS since the last ``reset_peak_rss`` (VmHWM), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class RssPeakSampler:
    """Samples this process's RSS in a thread; ``peak_growth()`` is max RSS minus the RSS
    before the model was loaded (so it counts weights, activations and KV cache)."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self._proc = psutil.Process()
        self._interval = interval_s
        self.start_rss = self._proc.memory_info().rss
        self.peak_rss = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)

    def reset_peak(self) -> None:
        self.peak_rss = self._proc.memory_info().rss

    pass_rss: int | None = None  # RSS when the current timed pass began (``settle``)

    _exact = False  # the kernel's high-water mark was reset at ``settle``

    def settle(self) -> None:
        """Start a timed pass: its growth (``pass_growth``) is counted from the RSS now. The
        caller frees what it can first (``release_freed_memory``), so every pass starts from
        the same state; RSS over the RSS before loading instead depended on what earlier
        variants had left in the heap (and went negative once malloc_trim returned it).
        Where Linux allows, the kernel's own peak-RSS mark (VmHWM) is reset here too, so the
        pass's peak is exact rather than sampled every ``interval_s``: a transient buffer
        (an int8 matmul's dequantized copy) lives for less than a sampling interval, and
        two runs of the demo disagreed by 6% on int8's sampled peak."""
        self._exact = reset_peak_rss()
        self.pass_rss = self.peak_rss = self._proc.memory_info().rss

    def pass_growth(self) -> int:
        """Highest RSS since ``settle`` minus the RSS then (activations, KV cache)."""
        self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)
        if self._exact:
            self.peak_rss = max(self.peak_rss, peak_rss() or 0)
        return self.peak_rss - (self.pass_rss or self.start_rss)

    def peak_growth(self) -> int:
        self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)
        return self.peak_rss - self.start_rss

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
