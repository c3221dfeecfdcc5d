"""Python's cycle collector paused while a bulk of short-lived rows is made."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cycle collector off for the block: tens of thousands of new rows (a keyword report,
    a busy day's call counts) would set off collections over every live object again and again
    (a third of such work's time), and rows hold no cycles; reference counting frees them as
    ever. Process-wide: it stays off only while some such block runs, and whichever block found
    it on turns it on again."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
