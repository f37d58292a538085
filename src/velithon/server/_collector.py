"""Python's garbage collector tuned for a serving process.

Every request allocates a few hundred short-lived container objects (frames of
coroutines, dicts, lists, tuples of headers). CPython counts them towards a pass of
its cyclic collector over the youngest generation every 700 net allocations, and at
each pass the objects of the requests in flight are promoted to older generations;
their deaths then no longer count down, so under load a young pass comes every few
dozen requests, and every tenth of those walks the middle generation, and so on up to
full passes over everything the process ever loaded. Measured on a gateway at 50
concurrent connections: 20 to 40 µs of collector time per request (a tenth of the
process's CPU), and a 40 ms full pass every few seconds, which is what the slowest
requests wait for.

A server process knows better: what exists once its app has started (modules,
routes, pools) lives until the end, so :func:`gc.freeze` moves it out of every pass,
and a larger young threshold lets short-lived objects die of their reference counts
before any pass looks at them. Requests almost never make reference cycles, so the
collector has little to find; it still runs, and cycles are still freed.

Only the process entry point applies this (:func:`~velithon.server.run_server`, used
by ``velithon run`` and :func:`~velithon.server.serve`): a server embedded in another
program with :func:`~velithon.server.serve_tcp` leaves the process's collector alone.
"""

from __future__ import annotations

import gc

__all__ = ["tune_collector"]


def tune_collector(threshold: int) -> None:
    """Freeze what exists now and collect the youngest generation every ``threshold``
    allocations; ``0`` changes nothing."""
    if threshold <= 0:
        return
    gc.collect()  # start-up garbage goes now, rather than being frozen with the rest
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)
