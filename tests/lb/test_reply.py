"""The one-shot reply slot used for actor request/reply."""

from __future__ import annotations

import pytest
import trio

from velithon._lb.reply import Reply


async def test_value_sent_before_wait_is_returned() -> None:
    reply: Reply[int] = Reply()
    assert reply.send(5)
    assert await reply.wait() == 5
    assert not reply.send(6)


async def test_waiter_is_woken_by_send() -> None:
    reply: Reply[str] = Reply()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.sleep(0))

        async def sender() -> None:
            await trio.testing.wait_all_tasks_blocked()
            assert reply.send("hi")

        nursery.start_soon(sender)
        assert await reply.wait() == "hi"


async def test_error_is_raised_in_waiter() -> None:
    reply: Reply[int] = Reply()
    reply.send_error(LookupError("nope"))
    with pytest.raises(LookupError, match="nope"):
        await reply.wait()


async def test_cancelled_waiter_abandons_the_reply(autojump_clock: trio.abc.Clock) -> None:
    reply: Reply[int] = Reply()
    with trio.move_on_after(1):
        await reply.wait()
    assert reply.abandoned
    assert reply.send(1) is False  # the actor learns nobody is listening
