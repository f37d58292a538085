"""velithon.testing raw client, canary, leak helpers and the public surface."""

from __future__ import annotations

import socket

import h11
import httpx
import pytest
import trio

import velithon.testing
from velithon.testing import (
    NoResponseError,
    ReadRequest,
    Send,
    close_wait_count,
    open_canary,
    open_fd_count,
    open_raw_connection,
    open_scripted_backend,
)


async def _answer_with(raw: bytes) -> velithon.testing.RawResponse:
    async with (
        open_scripted_backend([ReadRequest(), Send(raw)]) as backend,
        open_raw_connection("127.0.0.1", backend.port) as conn,
    ):
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return await conn.receive_response()


async def test_response_fields_and_multi_value_headers() -> None:
    response = await _answer_with(
        b"HTTP/1.1 201 Made\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 8\r\n\r\n"
        b'{"x": 1}'
    )
    assert (response.status, response.reason, response.http_version) == (201, "Made", "1.1")
    assert response.header_values("SET-COOKIE") == ["a=1", "b=2"]
    assert response.headers[0] == ("Set-Cookie", "a=1")
    assert response.json() == {"x": 1}
    assert response.complete


async def test_informational_responses_are_collected() -> None:
    response = await _answer_with(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
    assert response.status == 204
    assert [status for status, _ in response.informational] == [100, 103]


async def test_body_until_close_is_complete_when_no_length_is_given() -> None:
    response = await _answer_with(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
    assert (response.body, response.complete) == (b"until close", True)


async def test_malformed_head_raises_protocol_error() -> None:
    with pytest.raises(h11.RemoteProtocolError):
        await _answer_with(b"HTTP/1.1 2OO OK\r\n\r\n")


async def test_closed_before_any_response_is_no_response() -> None:
    with pytest.raises(NoResponseError):
        await _answer_with(b"")


async def test_head_responses_and_pipelining() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
    async with (
        open_scripted_backend([ReadRequest(), Send(answer + answer)]) as backend,
        open_raw_connection("127.0.0.1", backend.port) as conn,
    ):
        await conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await conn.receive_response(method="HEAD")
        second = await conn.receive_response(method="HEAD")
    assert first.body == second.body == b""
    assert first.header("content-length") == "50"


async def test_timeouts_and_wait_closed() -> None:
    async with (
        open_scripted_backend([ReadRequest()]) as backend,
        open_raw_connection("127.0.0.1", backend.port) as conn,
    ):
        with pytest.raises(trio.TooSlowError):
            await conn.receive_response(timeout=0.02)
        assert await conn.wait_closed(timeout=0.02) is False
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await conn.wait_closed(timeout=1.0) is True
        assert conn.eof and not conn.reset_by_peer


async def test_refused_connection_raises_oserror() -> None:
    async with open_canary(host="127.0.0.1") as canary:
        port = canary.port
    with pytest.raises(OSError):
        async with open_raw_connection("127.0.0.1", port):
            pass


async def test_canary_counts_contacts_and_reports_what_arrived() -> None:
    async with open_canary() as canary:
        assert canary.url == f"http://127.0.0.2:{canary.port}"
        canary.assert_untouched()
        async with httpx.AsyncClient(timeout=0.05) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(canary.url + "/internal")
        assert canary.accepted == 1
        with pytest.raises(AssertionError, match="GET /internal"):
            canary.assert_untouched()


@pytest.mark.parametrize("use_psutil", [True, False])
async def test_leak_helpers_see_a_close_wait_socket(use_psutil: bool) -> None:
    fds_before = open_fd_count(use_psutil=use_psutil)
    waiting_before = close_wait_count(use_psutil=use_psutil)
    async with open_scripted_backend([]) as backend:  # closes every connection at once
        client = socket.create_connection(("127.0.0.1", backend.port))
        try:
            await backend.wait_until(lambda: backend.connections_accepted == 1)
            with trio.fail_after(2):
                while close_wait_count(use_psutil=use_psutil) <= waiting_before:
                    await trio.sleep(0.005)  # kernel state: there is no event to wait on
            assert open_fd_count(use_psutil=use_psutil) > fds_before
            waiting = close_wait_count(use_psutil=use_psutil)
        finally:
            client.close()
    assert close_wait_count(use_psutil=use_psutil) < waiting


def test_both_leak_implementations_agree() -> None:
    assert open_fd_count(use_psutil=True) == open_fd_count(use_psutil=False)
    assert close_wait_count(use_psutil=True) == close_wait_count(use_psutil=False)


def test_public_surface() -> None:
    for name in velithon.testing.__all__:
        assert hasattr(velithon.testing, name), name
    assert velithon.testing.open_backend.__module__ == "velithon.testing"
    assert velithon.testing.Backend.__module__ == "velithon.testing"
