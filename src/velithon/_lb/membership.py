"""What a discovered target set changes in a pool: a pure diff.

A discovery source (DNS, a watched file) periodically says "these are the
targets, with these weights". The discovery actor holds the set it last applied
and asks :func:`plan_membership` what to do about a new result. The answer is a
list of actions the router already understands: add a target, change weights,
remove a target.

Rules:

* **A failed or empty result changes nothing.** A DNS hiccup, a half-written file
  or a service scaled to zero for a moment must never empty a pool: the last good
  set keeps serving, and the caller logs and counts the failure.
* **Adds come first, removals last**, so a pool that is replaced wholesale (every
  address changed at once) never passes through empty.
* Applying the actions to the current set gives exactly the new set
  (:func:`apply_membership` is the reference; a property test holds the two
  together).
* A target listed twice in one result keeps its first weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

__all__ = [
    "AddMember",
    "MembershipAction",
    "RemoveMember",
    "Reweight",
    "apply_membership",
    "plan_membership",
]


@attrs.frozen
class AddMember:
    """Start routing to ``url`` with ``weight``."""

    url: str
    weight: int


@attrs.frozen
class Reweight:
    """New weights for targets already in the set, as ``(url, weight)`` pairs."""

    weights: tuple[tuple[str, int], ...]


@attrs.frozen
class RemoveMember:
    """Stop routing to ``url`` (its in-flight requests drain)."""

    url: str


MembershipAction = AddMember | Reweight | RemoveMember


def _first_weights(found: Iterable[tuple[str, int]]) -> dict[str, int]:
    result: dict[str, int] = {}
    for url, weight in found:
        result.setdefault(url, weight)
    return result


def plan_membership(current: Mapping[str, int],
                    found: Sequence[tuple[str, int]] | None) -> list[MembershipAction]:
    """The actions that turn ``current`` (url -> weight) into ``found``.

    ``found`` is None for a failed lookup; None and an empty result both yield no
    action (the last good set stays).
    """
    if not found:
        return []
    wanted = _first_weights(found)
    actions: list[MembershipAction] = [
        AddMember(url, weight) for url, weight in wanted.items() if url not in current
    ]
    changed = tuple((url, weight) for url, weight in wanted.items()
                    if url in current and current[url] != weight)
    if changed:
        actions.append(Reweight(changed))
    actions.extend(RemoveMember(url) for url in current if url not in wanted)
    return actions


def apply_membership(current: Mapping[str, int],
                     actions: Iterable[MembershipAction]) -> dict[str, int]:
    """``current`` after ``actions``: what the router ends up holding."""
    result = dict(current)
    for action in actions:
        match action:
            case AddMember(url=url, weight=weight):
                result[url] = weight
            case Reweight(weights=weights):
                for url, weight in weights:
                    if url in result:
                        result[url] = weight
            case RemoveMember(url=url):
                result.pop(url, None)
    return result
