"""Python's cycle collector paused while a bulk of short-lived rows is made."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_inside = 0  # blocks running now, in every thread
_was_on = False  # whether the collector was on when the first of them began


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cycle collector off for the block: tens of thousands of new rows (a keyword report,
    a busy day's call counts) would set off collections over every live object again and again
    (a third of such work's time), and rows hold no cycles; reference counting frees them as
    ever. Process-wide, so counted: it is on again when the last block running ends, if it was
    on when the first began."""
    global _inside, _was_on
    with _lock:
        if _inside == 0:
            _was_on = gc.isenabled()
            gc.disable()
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0 and _was_on:
                gc.enable()
