"""One rule for how public objects name their module."""

from __future__ import annotations

from collections.abc import MutableMapping

import attrs

__all__ = ["fixup_module_metadata"]


def fixup_module_metadata(module_name: str, namespace: MutableMapping[str, object]) -> None:
    """Make the public objects of ``namespace`` report ``module_name`` as their module.

    Reprs, tracebacks and documentation then show ``velithon.testing.Backend`` rather than
    the private module that happens to define it (trio does the same). attrs classes keep
    their real module: attrs and cattrs resolve string annotations through
    ``sys.modules[cls.__module__]``, which must be the defining module.
    """
    names = namespace.get("__all__")
    public = names if isinstance(names, (list, tuple)) else [
        name for name in namespace if not name.startswith("_")]
    for name in public:
        obj = namespace[name]
        module = getattr(obj, "__module__", None)
        if (not isinstance(module, str) or not module.startswith("velithon.")
                or not callable(obj) or attrs.has(type(obj))
                or (isinstance(obj, type) and attrs.has(obj))):
            continue
        if any(part.startswith("_") for part in module.split(".")[1:]):
            try:
                obj.__module__ = module_name
            except (AttributeError, TypeError):
                pass  # builtin-backed objects cannot be renamed; their module stays
