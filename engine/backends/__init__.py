"""Backends, registered by name. ``get_backend("transformers")`` returns the class."""
from __future__ import annotations

from engine.backends.base import Backend, LoadInfo
from engine.core.errors import BackendError

_REGISTRY: dict[str, str] = {
    # name -> "module:Class", imported lazily so optional dependencies stay optional
    "transformers": "engine.backends.transformers_backend:TransformersBackend",
    "vllm": "engine.backends.vllm_backend:VllmBackend",
    "endpoint": "engine.backends.endpoint_backend:EndpointBackend",
}


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name``; unknown names list the known ones."""
    if name not in _REGISTRY:
        raise BackendError(f"Unknown backend {name!r}; known backends: {', '.join(sorted(_REGISTRY))}.")
    module_name, cls_name = _REGISTRY[name].split(":")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"Backend {name!r} needs {exc.name!r}: pip install 'roilab[{name}]'.") \
            from exc
    return getattr(module, cls_name)


__all__ = ["Backend", "LoadInfo", "get_backend", "known_backends"]


def known_backends() -> list[str]:
    return sorted(_REGISTRY)
