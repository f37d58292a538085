"""Picks per second of each strategy with 1,000 targets (pure core, no actors).

    python benchmarks/bench_strategies.py [--targets 1000] [--seconds 0.5]

Two masks per strategy: every target eligible, and 10 % ineligible (a fixed,
scattered set, as when some targets are down). Each pick gets the same kind of
inputs the router passes: the eligibility list, in-flight counts, latency
estimates (peak_ewma) and a hash key (hash, drawn from 10,000 keys). The hash
ring build time is reported too, since ``reconfigure`` pays it. Results go to
``benchmarks/RESULTS.md`` under "Strategies: picks per second".
"""

from __future__ import annotations

import argparse
import random
import time

from velithon._strategies import STRATEGY_NAMES, create_strategy

from _results import write_section

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


def ring_build_ms(n: int) -> float:
    targets = [f"http://10.0.{i // 250}.{i % 250}:8000" for i in range(n)]
    started = time.perf_counter()
    create_strategy("hash", targets)
    return (time.perf_counter() - started) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    n = args.targets
    all_up = [True] * n
    some_down = [i % 10 != 3 for i in range(n)]
    rows = []
    for name in STRATEGY_NAMES:
        up = measure(name, n, all_up, args.seconds)
        down = measure(name, n, some_down, args.seconds)
        rows.append(f"| `{name}` | {up:,.0f} | {1e6 / up:.2f} | {down:,.0f} | {1e6 / down:.2f} |")
        print(rows[-1], flush=True)
    build = ring_build_ms(n)
    body = (
        f"{n} targets, `Strategy.pick` called directly (weights 1–10, in-flight 0–20).\n\n"
        f"Command: `python benchmarks/bench_strategies.py --targets {n} --seconds {args.seconds:g}`\n\n"
        "| strategy | picks/s, all eligible | µs/pick | picks/s, 10 % ineligible | µs/pick |\n"
        "|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
        f"Hash ring build ({n} targets, 160 points each): {build:.0f} ms "
        "(paid at construction and on `reconfigure`).\n"
    )
    write_section(TITLE, body)
    print(f"ring build: {build:.0f} ms")


if __name__ == "__main__":
    main()
