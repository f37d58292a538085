"""The attack scenarios of ``benchmarks/attacks`` as a CI check.

The 60-second variant runs as a subprocess, exactly as a person would run it
(``python -m benchmarks.attacks --duration 60``): three loopback backends, a gateway
served by ``velithon run``, steady hash-verified traffic, seven attacks and faults.
Its exit code is the verdict of the gates (no lost or corrupted body, no idempotent
error outside the detection windows, gateway RSS and descriptors back near their
baseline, no backend blamed for what a client did, gateway alive, every scenario
run). The report must name every scenario, so a scenario that silently stopped
running cannot pass as a green run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCENARIOS = (
    "stalled uploads",
    "slowloris",
    "connection flood",
    "idle keep-alive",
    "backend killed",
    "flapping",
    "soak",
)


def test_the_60_second_attack_run_passes_every_gate() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.attacks", "--duration", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    report = run.stdout
    context = f"{report}\n--- stderr ---\n{run.stderr[-4000:]}"
    for name in SCENARIOS:
        assert f"| {name} |" in report, f"scenario {name!r} missing from the report\n{context}"
    assert "| gate | rule | measured | result |" in report, context
    assert run.returncode == 0, f"exit code {run.returncode}: a gate failed\n{context}"
