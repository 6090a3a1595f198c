"""Stops that Python dropped, raised again at the pilot's next progress.

A stop reaches a pilot as an exception raised by a signal handler: Ctrl+C or SIGTERM in the
command's process, ``ray.cancel`` (``interrupt_main``, the main thread's SIGINT handler) in a
Ray worker. Python drops such an exception where the handler happens to run inside a gc
callback (every timed pass has one: engine.pilot.gcpause) or a ``__del__`` ("Exception
ignored in"), and the pilot ran on to "done". ``stops_kept`` notes each stop as its handler
runs; ``again`` (the pilot's progress callback calls it at every step) raises a noted stop
once more.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Raise = Callable[[int], None]  # raises the stop for this signal number


@dataclass
class Stops:
    raise_for: Raise
    asked: list[int] = field(default_factory=list)  # every stop asked for, in order
    raised_again: int = 0  # how many of them ``again`` has raised

    def again(self, *_progress) -> None:
        if len(self.asked) > self.raised_again:
            self.raised_again = len(self.asked)
            self.raise_for(self.asked[-1])


@contextmanager
def stops_kept(signums: tuple[int, ...], raise_for: Raise | None = None) -> Iterator[Stops]:
    """While the block runs, each of ``signums`` is noted, then raised by ``raise_for`` (by
    default the handler that was installed: Ray's own for its cancel). Off the main thread,
    where no handler can be installed, nothing is noted."""
    previous = {s: signal.getsignal(s) for s in signums}

    def installed(signum: int) -> None:
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)
        raise KeyboardInterrupt

    stops = Stops(raise_for or installed)
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return

    def noted(signum, _frame) -> None:
        stops.asked.append(signum)
        stops.raise_for(signum)

    for s in signums:
        signal.signal(s, noted)
    try:
        yield stops
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
