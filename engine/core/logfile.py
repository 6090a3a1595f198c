"""Library messages go to a log file; the terminal shows roilab's own output.

torch, torchao, transformers, vLLM, llmcompressor and llmlingua talk a lot: Python warnings,
``logging`` records, their own tqdm bars, loguru, and C++ lines written straight to file
descriptor 2 (glog-style ``W1130 ...``), from this process and from the engine processes vLLM
starts. ``library_output_to(path)`` sends all of that to ``path`` for the length of a command:

* file descriptors 1 and 2 point at the log, so C++ writes and every child process (which
  inherits them) land there;
* ``sys.stdout`` and ``sys.stderr`` become routers: a write made by roilab's own code
  (``engine.*``, ``app.*``, ``__main__``), directly or through tqdm, goes to the terminal (a
  duplicate of the original descriptor); one made through ``logging``, ``warnings``, loguru or
  from any other module goes to the log;
* ``warnings`` are captured into ``logging``, whose root logger writes to the log, and
  stream handlers that libraries set up before the command are pointed at the routers.

A child process whose output roilab shows must be given the terminal explicitly:
``terminal_stdio()`` (the dashboard does). Nothing here knows about settings: the CLI picks
the path (``Settings.resolved_log_file``).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

# Writes that pass through these modules are decided by the frame that called them.
_PLUMBING = {"tqdm", "io", "_io", "codecs", "encodings", "contextlib", "functools"}
# Writes made through these are library messages, whoever called them.
_LIBRARY_CHANNELS = {"logging", "warnings", "loguru"}
_OURS = {"engine", "app"}


def _from_roilab(frame) -> bool:
    """True when the innermost frame that is not plumbing belongs to roilab."""
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        top = name.partition(".")[0]
        if name == __name__ or top in _PLUMBING:
            frame = frame.f_back
            continue
        if top in _LIBRARY_CHANNELS:
            return False
        return top in _OURS or name == "__main__"
    return False  # no Python caller (C code, a bare thread): not roilab's own output


class _Router:
    """Stands in for ``sys.stdout``/``sys.stderr``: roilab's writes to the terminal, the rest to
    the log while active; once closed, everything to whatever ``sys.<name>`` then is (a
    library may keep this object as its stream long after the command)."""

    def __init__(self, name: str, original, terminal, log) -> None:
        self.name, self.original, self.terminal, self.log = name, original, terminal, log

    def _current(self):
        if self.log is not None:
            return self.terminal
        current = getattr(sys, self.name)
        return current if current is not self else self.original

    def write(self, text: str) -> int:
        if self.log is not None and not _from_roilab(sys._getframe(1)):
            self.log.write(text)
            self.log.flush()
            return len(text)
        return self._current().write(text)

    def flush(self) -> None:
        self._current().flush()
        if self.log is not None:
            self.log.flush()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # tqdm draws its bar in Unicode only on a UTF-8 terminal
        return self._current().encoding

    @property
    def errors(self) -> str:
        return self._current().errors

    def isatty(self) -> bool:
        return self._current().isatty()

    def fileno(self) -> int:
        return self._current().fileno()

    def __getattr__(self, attr: str):  # encoding, errors, buffer, ...: the terminal's
        return getattr(self._current(), attr)


@dataclass
class LibraryLog:
    """Where library messages went during one command, and whether any came."""

    path: Path
    start: int = 0  # the log's size once the command's header was written
    routers: list[_Router] = field(default_factory=list)
    fds: dict[int, int] = field(default_factory=dict)  # 1/2 -> a duplicate of the terminal

    def wrote(self) -> bool:
        """True when the log grew during the command (another roilab writing counts too)."""
        try:
            return self.path.stat().st_size > self.start
        except OSError:
            return False


_active: LibraryLog | None = None


def terminal_stdio() -> dict:
    """``stdout=`` and ``stderr=`` for a child process whose output the user should see (the
    terminal's descriptors while library output goes to the log; nothing otherwise)."""
    if _active is None:
        return {}
    return {"stdout": _active.fds[1], "stderr": _active.fds[2]}


def open_log(path: Path, ignored_folder: bool = False):
    """The log, opened for appending, its folder made when missing; with ``ignored_folder``
    that new folder gets a .gitignore, so a log under the repository's data/ is never
    committed."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(parents=True)
        if ignored_folder:
            (folder / ".gitignore").write_text("*\n")
    return open(path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)


@contextmanager
def library_output_to(path: Path, command: str = "") -> Iterator[LibraryLog]:
    """Route library output to ``path`` (appended, one header line per command) until exit;
    see the module docstring. Raises OSError when the log cannot be opened."""
    global _active
    log = open_log(path)
    log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: roilab "
              f"{command} ===\n")
    log.flush()
    state = LibraryLog(path=path, start=path.stat().st_size)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    state.fds = saved
    for name, fd in (("stdout", 1), ("stderr", 2)):
        original = getattr(sys, name)
        terminal = _terminal(original, fd, saved[fd])
        state.routers.append(_Router(name, original, terminal, log))
    handlers = _repoint_handlers(state.routers)
    root = logging.getLogger()
    to_log = logging.StreamHandler(log)
    to_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(to_log)
    logging.captureWarnings(True)
    for fd in (1, 2):
        os.dup2(log.fileno(), fd)
    sys.stdout, sys.stderr = state.routers
    _active = state
    try:
        yield state
    finally:
        _active = None
        for router in state.routers:  # a closed pipe (`roilab show 1 | head`) must not stop
            with suppress(OSError, ValueError):  # the rest of the restoring
                router.flush()
        sys.stdout, sys.stderr = (r.original for r in state.routers)
        for fd, dup in saved.items():
            os.dup2(dup, fd)
        for router in state.routers:
            router.log = None
            if router.terminal is not router.original:
                with suppress(OSError, ValueError):  # closefd=False: the dup is closed below
                    router.terminal.close()
        for dup in saved.values():
            os.close(dup)
        logging.captureWarnings(False)
        root.removeHandler(to_log)
        for handler, stream in handlers:
            if handler.stream in state.routers:
                handler.setStream(stream)
        log.close()


def _terminal(original, fd: int, dup: int):
    """What roilab writes to while ``fd`` points at the log: a stream on the duplicate when the
    original stream is that descriptor, else the original object (pytest's capture, say)."""
    try:
        own = original.fileno() == fd
    except (AttributeError, OSError, ValueError):
        own = False
    if not own:
        return original
    return open(dup, "w", encoding=original.encoding, errors=original.errors, buffering=1,
                closefd=False)


def _repoint_handlers(routers: list[_Router]) -> list[tuple[logging.StreamHandler, object]]:
    """Stream handlers libraries made before the command (bound to the stdout/stderr of then)
    now write through the routers; returns (handler, old stream) to put back."""
    by_stream = {id(r.original): r for r in routers}
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    moved = []
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and id(handler.stream) in by_stream:
                moved.append((handler, handler.setStream(by_stream[id(handler.stream)])))
    return moved
