"""Operator actions: drain, undrain, reset a breaker, add or remove a target.

Each is ``POST {path}/targets/{action}`` with a JSON body naming the route and the
target; the action calls the facade's own runtime method (the same one code would
call), so the balancer's actors make the change. They exist only when
``mount_admin(..., token=...)`` was given a token, and need
``Authorization: Bearer <token>``.

Body fields: ``target`` (the target URL, always), ``route`` (a route name as
``/status`` shows it; may be left out when exactly one balancer has that target, or,
for ``add``, when the app has one balancer), ``weight`` (``add``, default 1) and
``drain_timeout`` (``remove``, seconds, default 30).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .._facades.route import BalancedFacade
from ._gather import Balanced


class ActionError(Exception):
    """A refused action: ``status`` is the HTTP status, the message the detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def _drain(facade: BalancedFacade, target: str, body: dict[str, Any]) -> None:
    await facade.drain(target, True)


async def _undrain(facade: BalancedFacade, target: str, body: dict[str, Any]) -> None:
    await facade.drain(target, False)


async def _reset_breaker(facade: BalancedFacade, target: str, body: dict[str, Any]) -> None:
    await facade.reset_breaker(target)


async def _add(facade: BalancedFacade, target: str, body: dict[str, Any]) -> None:
    weight = body.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise ActionError(400, f"weight must be a non-negative integer, got {weight!r}")
    await facade.add_target(target, weight)


async def _remove(facade: BalancedFacade, target: str, body: dict[str, Any]) -> None:
    timeout = body.get("drain_timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ActionError(400, f"drain_timeout must be a number of seconds >= 0, got {timeout!r}")
    await facade.remove_target(target, drain_timeout=float(timeout))


_Action = Callable[[BalancedFacade, str, dict[str, Any]], Awaitable[None]]

#: action name (the last path segment) -> what it does
ACTIONS: dict[str, _Action] = {
    "drain": _drain,
    "undrain": _undrain,
    "reset-breaker": _reset_breaker,
    "add": _add,
    "remove": _remove,
}


#: Longest target URL an action accepts (every scrape and status page repeats it).
MAX_TARGET_URL = 2048


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ActionError(400, f"the body must be a JSON object: {exc}") from None
    except RecursionError:
        raise ActionError(400, "the body must be a JSON object: nested too deeply") from None
    if not isinstance(body, dict):
        raise ActionError(400, "the body must be a JSON object")
    target = body.get("target")
    if not isinstance(target, str) or not target:
        raise ActionError(400, 'the body needs "target": the target URL')
    if len(target) > MAX_TARGET_URL:
        raise ActionError(400, f'"target" is longer than {MAX_TARGET_URL} characters')
    route = body.get("route")
    if route is not None and not isinstance(route, str):
        raise ActionError(400, '"route" must be a route name, as /status shows it')
    return body


def choose(balanced: Sequence[Balanced], route: str | None, target: str,
           action: str) -> Balanced:
    """The balancer an action applies to (404 when none fits, 400 when several do)."""
    if route is not None:
        for item in balanced:
            if item.name == route:
                if action != "add" and target not in item.facade.targets:
                    raise ActionError(404, f"route {route!r} has no target {target!r}")
                return item
        raise ActionError(404, f"no route named {route!r}; /status lists them")
    if action == "add":
        if len(balanced) == 1:
            return balanced[0]
        raise ActionError(400, 'several routes could take the target: name one with "route"')
    having = [item for item in balanced if target in item.facade.targets]
    if not having:
        raise ActionError(404, f"no route has the target {target!r}")
    if len(having) > 1:
        names = ", ".join(item.name for item in having)
        raise ActionError(400, f'the target is in several routes ({names}): name one with '
                               f'"route"')
    return having[0]


async def perform(balanced: Sequence[Balanced], action: str, raw: bytes) -> dict[str, Any]:
    """Run one action; returns the JSON answer or raises :class:`ActionError`."""
    body = parse_body(raw)
    target: str = body["target"]
    item = choose(balanced, body.get("route"), target, action)
    try:
        await ACTIONS[action](item.facade, target, body)
    except ValueError as exc:  # the engine refused: bad URL, already present, unknown
        raise ActionError(409 if "already" in str(exc) else 400, str(exc)) from None
    return {"ok": True, "action": action, "route": item.name, "target": target}
