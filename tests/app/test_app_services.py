"""ServiceHost and the app lifespan: start-once semantics, failures, shutdown grace, hooks."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from velithon import (
    BaseRoute,
    Match,
    Middleware,
    Request,
    ServiceHost,
    ServiceStartError,
    Velithon,
    open_service_host,
)

from support.asgi_client import ASGIClient, LifespanFailed, lifespan


@attrs.define  # eq=True makes instances unhashable: the host must key by identity
class FakeService:
    start_delay: float = 0.0
    fail_starts: int = 0
    crash_after: float | None = None
    runs: int = 0
    events: list[tuple[str, float]] = attrs.field(factory=list)

    async def run_service(self, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        await trio.sleep(self.start_delay)
        if self.fail_starts:
            self.fail_starts -= 1
            raise OSError("port in use")
        self.events.append(("started", trio.current_time()))
        task_status.started()
        try:
            if self.crash_after is not None:
                await trio.sleep(self.crash_after)
                raise RuntimeError("actor blew up")
            await trio.sleep_forever()
        finally:
            with trio.move_on_after(1, shield=True):
                await trio.sleep(0.5)  # cleanup takes time, under a shield
                self.events.append(("stopped", trio.current_time()))


async def test_ensure_started_is_idempotent_and_concurrent_callers_share_one_start(
        autojump_clock: trio.testing.MockClock) -> None:
    service = FakeService(start_delay=1.0)
    returned: list[float] = []
    async with open_service_host() as host:
        async def call() -> None:
            await host.ensure_started(service)
            returned.append(trio.current_time())
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        await host.ensure_started(service)
        assert host.is_started(service) and host.services == (service,)
    assert returned == [1.0, 1.0, 1.0]
    assert service.runs == 1
    assert service.events == [("started", 1.0), ("stopped", 1.5)]


async def test_failed_start_raises_in_every_waiter_and_a_later_call_retries(
        autojump_clock: trio.testing.MockClock) -> None:
    service = FakeService(start_delay=1.0, fail_starts=1)
    errors: list[str] = []
    async with open_service_host() as host:
        async def call() -> None:
            try:
                await host.ensure_started(service)
            except ServiceStartError as exc:
                errors.append(str(exc))
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        assert len(errors) == 3
        assert all("failed to start: port in use" in e for e in errors)
        assert not host.is_started(service)
        await host.ensure_started(service)
        assert host.is_started(service) and service.runs == 2
        assert trio.current_time() == 2.0


async def test_cancelled_starter_lets_a_waiter_start_instead(
        autojump_clock: trio.testing.MockClock) -> None:
    service = FakeService(start_delay=1.0)
    async with open_service_host() as host:
        async with trio.open_nursery() as nursery:
            async def impatient() -> None:
                with trio.move_on_after(0.5):
                    await host.ensure_started(service)
            nursery.start_soon(impatient)
            await trio.testing.wait_all_tasks_blocked()
            await host.ensure_started(service)
        assert host.is_started(service)
        assert service.events[0] == ("started", 1.5)


async def test_crash_after_start_is_logged_and_restarted_on_next_use(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    service = FakeService(crash_after=2.0)
    other = FakeService()
    async with open_service_host() as host:
        await host.ensure_started(service)
        await host.ensure_started(other)
        await trio.sleep(3)
        assert not host.is_started(service)
        assert host.is_started(other)  # one crash never takes the others down
        await host.ensure_started(service)
        assert service.runs == 2
    assert "actor blew up" in caplog.text


async def test_shutdown_waits_for_held_requests_within_the_grace(
        autojump_clock: trio.testing.MockClock) -> None:
    for request_time, expected_stop in [(2.0, 2.0), (100.0, 5.0)]:
        start = trio.current_time()
        service = FakeService()
        async with trio.open_nursery() as nursery:
            async with open_service_host(shutdown_grace=5.0) as host:
                await host.ensure_started(service)

                async def request(host: ServiceHost = host,
                                  request_time: float = request_time) -> None:
                    host.hold()
                    try:
                        await trio.sleep(request_time)
                    finally:
                        host.release()
                nursery.start_soon(request)
                await trio.testing.wait_all_tasks_blocked()
            assert service.events[-1] == ("stopped", start + expected_stop + 0.5)
            nursery.cancel_scope.cancel()


async def test_host_refuses_new_starts_while_shutting_down_and_checks_the_protocol() -> None:
    async with open_service_host() as host:
        with pytest.raises(TypeError, match="has no run_service"):
            await host.ensure_started(object())
        await host.drain()
        with pytest.raises(RuntimeError, match="shutting down"):
            await host.ensure_started(FakeService())
    assert "closing" in repr(host)


async def test_body_exception_is_not_wrapped_in_a_group() -> None:
    with pytest.raises(KeyError):
        async with open_service_host():
            raise KeyError("plain")


class ServiceRoute(BaseRoute):
    """A route that is also a service, like GatewayRoute."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.running = False
        self.starts = 0

    async def run_service(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.starts += 1
        self.running = True
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.running = False

    def matches(self, scope: dict[str, Any]) -> tuple[Match, dict[str, Any]]:
        if scope["type"] == "http" and scope["path"] == self.path:
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = f"running={self.running} host={'velithon.services' in scope}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class ServiceMiddleware:
    """A middleware instance that is a service (like ProxyMiddleware)."""

    def __init__(self) -> None:
        self.running = False

    async def run_service(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.running = False

    def bind(self, app: Any) -> Any:
        async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if "velithon.services" in scope:
                assert self.running, "middleware service must run before requests reach it"
            await app(scope, receive, send)
        return wrapped


async def test_lifespan_starts_services_runs_hooks_and_stops_everything() -> None:
    log: list[str] = []
    route = ServiceRoute("/svc")
    middleware = ServiceMiddleware()
    app = Velithon(routes=[route], middleware=[middleware],
                   on_startup=[lambda: log.append("sync startup")],
                   on_shutdown=[lambda: log.append("sync shutdown")])

    @app.on_event("startup")
    async def startup() -> None:
        log.append(f"async startup, route running={route.running}")
        app.state.ready = True

    @app.on_event("shutdown")
    async def shutdown() -> None:
        log.append(f"async shutdown, route running={route.running}")

    @app.get("/host")
    async def host_info(request: Request) -> dict[str, Any]:
        return {"host": type(request.services).__name__, "ready": app.state.ready}

    client = ASGIClient(app)
    assert (await client.get("/svc")).text == "running=False host=False"  # transient mode
    async with lifespan(app):
        assert route.running and middleware.running
        assert (await client.get("/svc")).text == "running=True host=True"
        assert (await client.get("/host")).json() == {"host": "ServiceHost", "ready": True}
    assert not route.running and not middleware.running
    assert log == ["sync startup", "async startup, route running=True",
                   "sync shutdown", "async shutdown, route running=True"]
    assert route.starts == 1


async def test_route_appended_after_startup_is_started_on_first_request() -> None:
    app = Velithon()
    async with app.run_services() as host:
        late = ServiceRoute("/late")
        app.routes.append(late)
        assert not late.running
        assert (await ASGIClient(app).get("/late")).text == "running=True host=True"
        assert host.is_started(late)


async def test_middleware_added_after_startup_is_started_before_use() -> None:
    app = Velithon()
    app.add_route("/", lambda: "ok")
    async with app.run_services():
        late = ServiceMiddleware()
        app.add_middleware(late)
        assert (await ASGIClient(app).get("/")).text == "ok"
        assert late.running


async def test_class_built_middleware_that_is_a_service_is_started() -> None:
    class BuiltService(ServiceMiddleware):
        instances: list[BuiltService] = []

        def __init__(self, app: Any) -> None:
            super().__init__()
            self.app = app
            self.instances.append(self)

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            await self.bind(self.app)(scope, receive, send)

    app = Velithon(middleware=[Middleware(BuiltService)])
    app.add_route("/", lambda: "ok")
    async with app.run_services():
        assert (await ASGIClient(app).get("/")).text == "ok"
        assert [m.running for m in BuiltService.instances] == [True]


@pytest.mark.parametrize("breakage, message", [
    ("hook", "RuntimeError: database unreachable"),
    ("service", "failed to start: port in use"),
    ("route", r"app\.routes\[0\] is not a route"),
])
async def test_startup_failure_is_reported_with_its_message(breakage: str, message: str) -> None:
    app = Velithon()
    if breakage == "hook":
        def broken() -> None:
            raise RuntimeError("database unreachable")
        app.on_startup.append(broken)
    elif breakage == "service":
        app.add_middleware(type("M", (ServiceMiddleware,), {
            "run_service": FakeService(fail_starts=1).run_service})())
    else:
        app.routes.append("not a route")
    with pytest.raises(LifespanFailed, match=message):
        async with lifespan(app):
            pass
    # Nothing is left half-running: services can be started again afterwards.
    app.on_startup.clear()
    app.routes.clear()
    app.user_middleware.clear()
    async with app.run_services():
        pass


async def test_shutdown_grace_bounds_the_wait_for_requests_in_flight(
        autojump_clock: trio.testing.MockClock) -> None:
    route = ServiceRoute("/svc")
    app = Velithon(routes=[route], shutdown_grace=2.0)
    stopped_at: list[float] = []

    @app.get("/slow")
    async def slow() -> str:
        await trio.sleep(60)
        return "done"

    async with trio.open_nursery() as nursery:
        async with app.run_services():
            nursery.start_soon(ASGIClient(app).get, "/slow")
            await trio.testing.wait_all_tasks_blocked()
        stopped_at.append(trio.current_time())
        assert not route.running
        nursery.cancel_scope.cancel()
    assert stopped_at == [2.0]


async def test_services_cannot_be_run_twice_at_once() -> None:
    app = Velithon()
    async with app.run_services():
        with pytest.raises(RuntimeError, match="already running"):
            async with app.run_services():
                pass


def test_bad_event_names_and_grace_are_refused() -> None:
    app = Velithon()
    with pytest.raises(ValueError, match="unknown event 'start'"):
        app.on_event("start")
    with pytest.raises(ValueError, match="shutdown_grace must be >= 0"):
        Velithon(shutdown_grace=-1)


async def test_lifespan_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = Velithon(on_shutdown=[lambda: 1 / 0])
    with caplog.at_level(logging.ERROR, logger="velithon.app"):
        with pytest.raises(LifespanFailed, match="ZeroDivisionError"):
            async with lifespan(app):
                pass
    assert "lifespan shutdown failed" in caplog.text


async def test_service_route_that_cannot_start_answers_503(
        caplog: pytest.LogCaptureFixture) -> None:
    class BrokenRoute(ServiceRoute):
        async def run_service(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            raise OSError("no upstream config")

    app = Velithon()
    async with app.run_services():
        app.routes.append(BrokenRoute("/broken"))
        response = await ASGIClient(app).get("/broken")
    assert response.status == 503
    assert response.json() == {"error": "Service Unavailable", "status": 503,
                               "detail": "the route's service could not start"}
    assert "no upstream config" in caplog.text


async def test_middleware_that_fails_to_build_is_a_startup_failure() -> None:
    class NeedsTargets:
        def __init__(self, app: Any, targets: list[str]) -> None:
            if not targets:
                raise ValueError("At least one target URL is required")

    app = Velithon(middleware=[Middleware(NeedsTargets, targets=[])])
    with pytest.raises(LifespanFailed, match="ValueError: At least one target URL is required"):
        async with lifespan(app):
            pass


# ---- stopping one service; app-level services ------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def run_service(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
        self.events.append("started")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1)  # a bounded, shielded cleanup
            self.events.append("cleaned up")


async def test_stop_ends_one_service_after_its_cleanup(autojump_clock: object,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    one, two = _Recorder(), _Recorder()
    async with open_service_host() as host:
        await host.ensure_started(one)
        await host.ensure_started(two)
        await host.stop(one)
        assert one.events == ["started", "cleaned up"]
        assert host.services == (two,) and not host.is_started(one)
        await host.stop(one)  # no longer running: nothing to do
        await host.ensure_started(one)  # and it can start again
        assert one.events == ["started", "cleaned up", "started"]
    assert "returned" not in caplog.text  # a stop is not reported as a service that quit


async def test_app_services_start_with_the_app() -> None:
    recorder = _Recorder()
    app = Velithon(services=[recorder])
    assert app.service_host is None
    async with app.run_services() as host:
        assert app.service_host is host
        assert recorder.events == ["started"] and host.services == (recorder,)
    assert app.service_host is None


async def test_an_app_service_that_is_not_one_fails_start_up() -> None:
    app = Velithon(services=[object()])
    with pytest.raises(TypeError, match=r"app.services\[0\] is not a service"):
        async with app.run_services():
            pass
