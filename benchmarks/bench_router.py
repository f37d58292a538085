"""Cost of one pick through the router actor vs a direct strategy call.

    python benchmarks/bench_router.py [--picks 20000] [--targets 3]

A pick through the actor is: a ``Pick`` message into the router's inbox, the
router's synchronous decision, a ``Lease`` back through a one-shot reply, and
the ``Done`` report when the lease finishes (which the router forwards to the
target actor). The direct call is ``strategy.pick(...)`` alone. Results are
written to ``benchmarks/RESULTS.md`` under "Router: pick cost".
"""

from __future__ import annotations

import argparse
import time

import trio
from _results import write_section

from velithon._lb.strategies import create_strategy
from velithon._lb.system import BalancerConfig, open_balancer


async def through_router(targets: int, picks: int, concurrency: int) -> float:
    urls = tuple(f"http://10.0.0.{i % 250}:{8000 + i}" for i in range(targets))
    async with open_balancer(BalancerConfig(targets=urls)) as balancer:
        per_task = picks // concurrency

        async def worker() -> None:
            for _ in range(per_task):
                lease = await balancer.pick()
                await lease.finish("success", 200)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - start
    return elapsed / (per_task * concurrency)


def direct(targets: int, picks: int) -> float:
    urls = [f"http://10.0.0.{i % 250}:{8000 + i}" for i in range(targets)]
    strategy = create_strategy("round_robin", urls)
    eligible = [True] * targets
    in_flight = [0] * targets
    start = time.perf_counter()
    for _ in range(picks):
        strategy.pick(eligible, in_flight)
    return (time.perf_counter() - start) / picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--picks", type=int, default=20000)
    parser.add_argument("--targets", type=int, default=3)
    args = parser.parse_args()
    rows = []
    d = direct(args.targets, args.picks)
    rows.append(("direct `strategy.pick` (round_robin)", d))
    for concurrency in (1, 16):
        r = trio.run(through_router, args.targets, args.picks, concurrency)
        rows.append((f"router actor, {concurrency} concurrent requesters", r))
    lines = ["| path | µs per pick | picks/s |", "|---|---:|---:|"]
    for label, seconds in rows:
        lines.append(f"| {label} | {seconds * 1e6:.2f} | {1 / seconds:,.0f} |")
    table = "\n".join(lines)
    print(table)
    command = f"python benchmarks/bench_router.py --picks {args.picks} --targets {args.targets}"
    write_section("Router: pick cost", f"{args.targets} targets, round robin, pick + finish.\n\n"
                  f"Command: `{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
