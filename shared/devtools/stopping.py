"""Waiting that a stop request always ends: for simulators that must stop even when the broker is gone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """`stop` was set while waiting."""


async def until_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T:
    """`aw`, unless `stop` is set first: then it is cancelled (not awaited: a send to a lost broker may take
    long to give up) and Stopped is raised."""
    task = asyncio.ensure_future(aw)
    if not stop.is_set():
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    raise Stopped


async def close_soon(aw: Awaitable[object], timeout_s: float = 3.0) -> None:
    """Close a client without hanging on a lost broker: give up after `timeout_s`."""
    with contextlib.suppress(Exception, TimeoutError):
        await asyncio.wait_for(aw, timeout_s)
