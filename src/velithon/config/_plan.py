"""What a reload must do: a pure comparison of two configurations.

``plan_reload(old, new)`` returns a :class:`ReloadPlan`: a list of actions and, when
the new file changes something a running gateway cannot change, the reasons it must be
refused as a whole (nothing is half-applied).

The rules:

* A route is the same route across reloads when it has the same ``name`` (by default
  ``gateway_<path>``); a proxy when it has the same ``path_prefix``.
* Same route, only ``targets`` or ``weights`` differ, and neither file lists a
  dynamic source (``dns+srv://``, ``dns://``, ``file://``) for it: a live update
  (:class:`UpdateTargets`): new targets are added, removed ones are drained and then
  removed once their requests finish, changed weights are set. Targets that stay keep
  their health, breaker and connections. The order of targets is not significant
  (``weights`` are matched to targets by position within each file).
* Same route, any other key differs: the route is rebuilt (:class:`ReplaceFacade`) and
  swapped in; the old one finishes its requests, then stops. Its targets start afresh.
* A new key: :class:`AddFacade`; a key that is gone: :class:`RemoveFacade`. A changed
  order is applied with the rest (the new file's order is the order requests are
  matched in).
* ``[logging] level`` is applied at once (:class:`SetLogLevel`).
* ``[server]``, ``[admin]`` and ``[logging] access_log`` apply at start-up only: a
  change there refuses the reload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from .._discovery.specs import is_dynamic
from ._sections import GatewayConfig, ProxySection, RouteSection

__all__ = [
    "Action",
    "AddFacade",
    "Kind",
    "ReloadPlan",
    "RemoveFacade",
    "ReplaceFacade",
    "SetLogLevel",
    "UpdateTargets",
    "apply_target_update",
    "plan_reload",
    "target_weights",
]

Kind = Literal["route", "proxy"]
_LIVE_FIELDS = frozenset({"targets", "weights"})


@attrs.frozen
class UpdateTargets:
    """Change a running facade's targets in place."""

    kind: Kind
    key: str
    add: tuple[tuple[str, int], ...] = ()
    remove: tuple[str, ...] = ()
    reweight: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        parts = [f"+{url}" + (f" (weight {w})" if w != 1 else "") for url, w in self.add]
        parts += [f"-{url}" for url in self.remove]
        parts += [f"{url} weight {w}" for url, w in self.reweight]
        return f"{self.kind} {self.key}: {', '.join(parts)}"


@attrs.frozen
class AddFacade:
    kind: Kind
    key: str

    def describe(self) -> str:
        return f"{self.kind} {self.key} added"


@attrs.frozen
class RemoveFacade:
    kind: Kind
    key: str

    def describe(self) -> str:
        return f"{self.kind} {self.key} removed"


@attrs.frozen
class ReplaceFacade:
    """Rebuild a facade whose ``changed`` keys a live update cannot express."""

    kind: Kind
    key: str
    changed: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.kind} {self.key} rebuilt ({', '.join(self.changed)} changed)"


@attrs.frozen
class SetLogLevel:
    level: str

    def describe(self) -> str:
        return f"log level {self.level}"


Action = UpdateTargets | AddFacade | RemoveFacade | ReplaceFacade | SetLogLevel


@attrs.frozen
class ReloadPlan:
    actions: tuple[Action, ...] = ()
    #: why the new configuration cannot be applied to a running gateway
    refused: tuple[str, ...] = ()
    reordered: tuple[Kind, ...] = ()

    def describe(self) -> str:
        """What changed, in one line."""
        if self.refused:
            return "; ".join(self.refused)
        parts = [action.describe() for action in self.actions]
        parts += [f"{kind} order changed" for kind in self.reordered]
        return "; ".join(parts) if parts else "no changes"


def target_weights(section: RouteSection | ProxySection) -> dict[str, int]:
    """Target URL → weight (1 each when ``weights`` is unset)."""
    weights = section.weights or (1,) * len(section.targets)
    return dict(zip(section.targets, weights, strict=True))


def apply_target_update(weights: Mapping[str, int], update: UpdateTargets) -> dict[str, int]:
    """The target → weight map after ``update`` (what the running facade ends up with)."""
    result = {url: w for url, w in weights.items() if url not in update.remove}
    result.update(update.add)
    result.update(update.reweight)
    return result


def _has_sources(section: RouteSection | ProxySection) -> bool:
    return any(is_dynamic(target) for target in section.targets)


def _changed_fields(old: attrs.AttrsInstance, new: attrs.AttrsInstance) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(type(old))
                 if getattr(old, f.name) != getattr(new, f.name))


def _plan_facades(kind: Kind, old: Sequence[RouteSection | ProxySection],
                  new: Sequence[RouteSection | ProxySection]) -> list[Action]:
    before = {section.key: section for section in old}
    after = {section.key: section for section in new}
    actions: list[Action] = []
    for key, section in after.items():
        previous = before.get(key)
        if previous is None:
            actions.append(AddFacade(kind, key))
            continue
        changed = _changed_fields(previous, section)
        if not changed:
            continue
        if set(changed) - _LIVE_FIELDS or _has_sources(previous) or _has_sources(section):
            # a dynamic source (dns+srv://, file://) is no target to add: rebuild the facade
            actions.append(ReplaceFacade(kind, key, tuple(c for c in changed)))
            continue
        was, now = target_weights(previous), target_weights(section)
        update = UpdateTargets(
            kind, key,
            add=tuple((url, w) for url, w in now.items() if url not in was),
            remove=tuple(url for url in was if url not in now),
            reweight=tuple((url, w) for url, w in now.items() if url in was and was[url] != w),
        )
        if update.add or update.remove or update.reweight:
            actions.append(update)
    actions += [RemoveFacade(kind, key) for key in before if key not in after]
    return actions


def plan_reload(old: GatewayConfig, new: GatewayConfig) -> ReloadPlan:
    """The actions that turn a gateway running ``old`` into one running ``new``."""
    refused = [f"[{name}] changed ({', '.join(_changed_fields(was, now))}): it applies at "
               "start-up only; restart the gateway to change it"
               for name, was, now in (("server", old.server, new.server),
                                      ("admin", old.admin, new.admin)) if was != now]
    if old.logging.access_log != new.logging.access_log:
        refused.append("[logging] access_log changed: it applies at start-up only; "
                       "restart the gateway to change it")
    if refused:
        return ReloadPlan(refused=tuple(refused))
    actions = _plan_facades("route", old.routes, new.routes)
    actions += _plan_facades("proxy", old.proxies, new.proxies)
    if old.logging.level.lower() != new.logging.level.lower():
        actions.append(SetLogLevel(new.logging.level.lower()))
    reordered: list[Kind] = []
    for kind, was, now in (("route", old.routes, new.routes),
                           ("proxy", old.proxies, new.proxies)):
        common = [s.key for s in now if s.key in {o.key for o in was}]
        if common != [s.key for s in was if s.key in set(common)]:
            reordered.append(kind)  # type: ignore[arg-type]
    return ReloadPlan(actions=tuple(actions), reordered=tuple(reordered))
