"""Write one section of benchmarks/RESULTS.md, leaving the others untouched."""

from __future__ import annotations

import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Each section says the command that produced it. Compare ratios within a section\n"
    "(same run, same machine); absolute numbers vary with the machine.\n"
)


def write_section(title: str, body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    machine = f"_Machine: {platform.machine()}, Python {platform.python_version()}._\n\n"
    section = f"## {title}\n\n{machine}{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text.rstrip() + "\n")
