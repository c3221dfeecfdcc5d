"""Attribution (DESIGN §4): which visit earned a call, how it was decided, and how sure we are.

Runs on SQL only, once every lease that could explain a call has been flushed there (the flush
watermark, `runner.ready_by`); deterministic, so re-running it over a period changes nothing
unless the data did. Nothing is silently guessed: a tie leaves the call `ambiguous` with its
candidates.

Three parts: `evidence` loads everything the rules may consult for a batch of calls (source
numbers, slots, leases, tel taps, the callers' earlier calls) in a few queries; `rules` decides
one call on that evidence, in memory, with no session or Redis; `runner` picks the calls that
are ready and decides a batch in time order, so each call sees the credits of the calls before
it, in the batch or not, then stores the results. One call is a batch of one.
"""

from dni.attribution.runner import CLOCK_MARGIN, attribute_pending, leaked_numbers, reattribute

__all__ = ["CLOCK_MARGIN", "attribute_pending", "leaked_numbers", "reattribute"]
