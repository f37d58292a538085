"""The dashboard: one self-contained HTML page (inline CSS and JavaScript, no CDN).

The page polls ``{path}/status`` every second and draws a card per target: health,
breaker state, share of the route's traffic, requests/s and latency sparklines (inline
SVG). When a poll fails it greys the cards out and says since when the gateway has
been unreachable. The file lives beside this module (``dashboard.html``); the admin
path is written into it once, when the admin surface is mounted.
"""

from __future__ import annotations

import json
from importlib.resources import files

_PLACEHOLDER = "__VELITHON_ADMIN_PATH__"


def dashboard_page(path: str) -> bytes:
    """The page for an admin surface mounted at ``path``."""
    template = files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")
    # a JSON string is a valid JavaScript string; "</" is escaped so it cannot end the script
    literal = json.dumps(path).replace("</", "<\\/")
    return template.replace(_PLACEHOLDER, literal).encode("utf-8")
