"""A request's output channel (engine/output_channel.py): items in order, a receiver that waits
until one is sent, and a cancelled receiver that leaves the channel usable."""

from __future__ import annotations

import anyio
import pytest

from engine.output_channel import OutputChannel

pytestmark = pytest.mark.anyio


async def test_items_arrive_in_order_whether_sent_before_or_while_waiting():
    channel = OutputChannel()
    channel.send_nowait(1)
    channel.send_nowait(2)
    received = [await channel.receive(), await channel.receive()]

    async def send_later():
        await anyio.sleep(0.01)
        channel.send_nowait(3)
        channel.send_nowait(4)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send_later)
        received += [await channel.receive(), await channel.receive()]
    assert received == [1, 2, 3, 4]


async def test_a_cancelled_receiver_leaves_the_channel_usable():
    channel = OutputChannel()
    with anyio.move_on_after(0.01):
        await channel.receive()  # nothing comes: cancelled while waiting
    channel.send_nowait("after")
    assert await channel.receive() == "after"
