"""Where a pilot runs: the host, the GPUs NVML sees there and, on Ray, the node id.

Written with the run (``Store.set_run_node``, revision 0008) by the process that runs the
pilot when it starts, so a run submitted from one machine and run on another names the one
that measured it; ``roilab show`` prints it beside the hardware the run is priced as.
"""
from __future__ import annotations

import os
import socket
from typing import Any


def this_node(ray_node_id: str | None = None) -> dict[str, Any]:
    """``{"host", "gpu_name", "gpu_count"[, "ray_node_id"]}`` for this process: the GPUs it
    may use (CUDA_VISIBLE_DEVICES honoured, as Ray sets it for a task), 0 and None on a CPU
    box. Asked through NVML: no CUDA context is created."""
    count = _visible_gpus()
    node: dict[str, Any] = {"host": socket.gethostname(), "gpu_count": count,
                            "gpu_name": _gpu_name() if count else None}
    if ray_node_id:
        node["ray_node_id"] = ray_node_id
    return node


def node_text(node: dict[str, Any] | None) -> str:
    """``HOST: 1 x NVIDIA H100 80GB HBM3`` / ``HOST (no GPU)``, with the Ray node's first
    characters when it ran on Ray; "not recorded" for a run stored before revision 0008."""
    if not node:
        return "not recorded (a run stored before roilab recorded it)"
    host = node.get("host") or "an unknown host"
    text = (f"{host}: {node['gpu_count']} x {node.get('gpu_name') or 'GPU'}"
            if node.get("gpu_count") else f"{host} (no GPU)")
    if node.get("ray_node_id"):
        text += f", Ray node {node['ray_node_id'][:12]}"
    return text


def _visible_gpus() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no bindings, no driver, no GPU: none visible
        return 0
    try:
        total = pynvml.nvmlDeviceGetCount()
    except Exception:  # noqa: BLE001
        total = 0
    finally:
        pynvml.nvmlShutdown()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return total
    return min(total, len([v for v in visible.split(",") if v.strip()]))


def _gpu_name() -> str | None:
    from engine.pilot.detect import nvml_gpu_name

    return nvml_gpu_name(0)
