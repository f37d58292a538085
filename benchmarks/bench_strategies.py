"""Picks per second of each strategy with 1,000 targets (pure core, no actors).

    python benchmarks/bench_strategies.py [--targets 1000] [--seconds 0.5] [--repeat 3]

Two masks per strategy: every target eligible, and 10 % ineligible (a fixed,
scattered set, as when some targets are down). Each pick gets the same kind of
inputs the router passes: the eligibility list, in-flight counts, latency
estimates (peak_ewma) and a hash key (hash, drawn from 10,000 keys). Each
figure is the best of ``--repeat`` runs (the box may be shared). The hash ring's
build and incremental ``reconfigure`` times are reported too: the router actor
pays ``reconfigure`` inline when targets change. Results go to
``benchmarks/RESULTS.md`` under "Strategies: picks per second".
"""

from __future__ import annotations

import argparse
import random
import time

from _results import write_section

from velithon._lb.strategies import STRATEGY_NAMES, create_strategy

TITLE = "Strategies: picks per second"


def measure(name: str, n: int, mask: list[bool], seconds: float) -> float:
    rng = random.Random(1)
    weights = [rng.randint(1, 10) for _ in range(n)]
    strategy = create_strategy(name, [f"http://10.0.{i // 250}.{i % 250}:8000" for i in range(n)],
                               weights, rng=random.Random(2))
    in_flight = [rng.randint(0, 20) for _ in range(n)]
    latency = [rng.uniform(0.005, 0.2) for _ in range(n)] if name == "peak_ewma" else []
    keys = [f"user-{i}".encode() for i in range(10_000)] if name == "hash" else [None]
    pick = strategy.pick
    picks = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for key in keys[:1000] if name == "hash" else [None] * 1000:
            pick(mask, in_flight, latency, key)
        picks += 1000
        if time.perf_counter() >= deadline:
            break
        if name == "hash":
            keys = keys[1000:] + keys[:1000]
    return picks / (time.perf_counter() - started)


def ring_ms(n: int) -> tuple[float, float, float]:
    """(build, remove one target, add it back) in milliseconds."""
    targets = [f"http://10.0.{i // 250}.{i % 250}:8000" for i in range(n)]
    times = []
    started = time.perf_counter()
    strategy = create_strategy("hash", targets)
    times.append(time.perf_counter() - started)
    for change in (targets[1:], targets):
        started = time.perf_counter()
        strategy.reconfigure(change)
        times.append(time.perf_counter() - started)
    build, remove, add = (t * 1000.0 for t in times)
    return build, remove, add


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.targets
    all_up = [True] * n
    some_down = [i % 10 != 3 for i in range(n)]
    rows = []
    for name in STRATEGY_NAMES:
        up = max(measure(name, n, all_up, args.seconds) for _ in range(args.repeat))
        down = max(measure(name, n, some_down, args.seconds) for _ in range(args.repeat))
        rows.append(f"| `{name}` | {up:,.0f} | {1e6 / up:.2f} | {down:,.0f} | {1e6 / down:.2f} |")
        print(rows[-1], flush=True)
    build, remove, add = min(ring_ms(n) for _ in range(args.repeat))
    command = (
        f"python benchmarks/bench_strategies.py --targets {n} --seconds {args.seconds:g} "
        f"--repeat {args.repeat}"
    )
    body = (
        f"{n} targets, `Strategy.pick` called directly (weights 1–10, in-flight 0–20), "
        f"best of {args.repeat}.\n\n"
        f"Command: `{command}`\n\n"
        "| strategy | picks/s, all eligible | µs/pick | picks/s, 10 % ineligible | µs/pick |\n"
        "|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
        f"Hash ring ({n} targets, 160 points each): build {build:.0f} ms; `reconfigure` "
        f"removing one target {remove:.0f} ms, adding one {add:.0f} ms (survivors' points "
        "are kept, only new targets are hashed).\n"
    )
    write_section(TITLE, body)
    print(f"ring: build {build:.0f} ms, remove one {remove:.0f} ms, add one {add:.0f} ms")


if __name__ == "__main__":
    main()
