"""dni.gcpause: the collector is off while any block runs and on again after the last."""

from __future__ import annotations

import gc
import threading

from dni.gcpause import collector_paused


def test_overlapping_blocks_turn_the_collector_on_only_after_the_last() -> None:
    assert gc.isenabled()
    first_inside, second_done, seen = threading.Event(), threading.Event(), []

    def other() -> None:
        with collector_paused():
            first_inside.set()
            second_done.wait(5)
        seen.append(gc.isenabled())  # the other block still runs

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        first_inside.wait(5)
    assert not gc.isenabled()  # this block ended, the other's runs on
    second_done.set()
    thread.join(5)
    assert seen == [True] and gc.isenabled()
