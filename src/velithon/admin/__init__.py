"""The admin surface of a gateway app: status, Prometheus metrics, ready/live, a dashboard.

``mount_admin(app)`` adds it to a ``Velithon`` app in one line; see ``docs/admin.md``.
Implementation modules are private; this file re-exports the public names.
"""

from __future__ import annotations

from .._exports import fixup_module_metadata
from ._mount import mount_admin as mount_admin
from ._site import AdminSite as AdminSite

__all__ = ["AdminSite", "mount_admin"]

fixup_module_metadata(__name__, globals())
