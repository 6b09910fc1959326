"""Clean-ups after a failed acquire: a late reply's deferred release never frees a later grant
of the same object, a refusal (an error reply) is not a lost reply (no clean-up at all), and
the asyncio lock's per-loop clients do not outlive their event loops.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio
from _servers import ReplicaPair, Server
from conftest import ServerFactory
from test_async_lock import run as run_async
from test_async_lock import status as astatus
from test_lock_faults import DebugSleep, debug_server

import redis_fence
import redis_fence.asyncio

KEY = "test:cleanup"


# ---- 1. a deferred release never frees a later grant (asyncio) ------------------------------


async def _late_acquire_then_new_grant(
    s: Server, c: redis.asyncio.Redis, owner: str | None
) -> None:
    kw: dict[str, Any] = {} if owner is None else {"owner": owner}
    lock = redis_fence.asyncio.Lock(c, KEY, io_timeout=0.3, ttl=30, **kw)
    assert await lock.status() is None  # its connection is open: the acquire goes out at once
    first_owner = lock.owner
    sleep = DebugSleep(s, 1)
    with pytest.raises(redis.exceptions.TimeoutError):
        await lock.acquire()
    assert lock.token is None and not lock.held
    if owner is None:
        assert lock.owner != first_owner  # the default owner is rotated
    else:
        assert lock.owner == owner
    await asyncio.get_running_loop().run_in_executor(None, sleep.wait)
    if owner is None:
        # The late grant (old owner) blocks until the deferred release frees it.
        deadline = time.monotonic() + 10
        while await astatus(c, KEY) is not None:
            assert time.monotonic() < deadline, "the late grant was never released"
            await asyncio.sleep(0.02)
    token = await lock.acquire()
    assert isinstance(token, int) and token > 0
    # The grant stays held: no deferred release (queued or retried) frees it.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        st = await astatus(c, KEY)
        assert st is not None, "the new grant was freed by a deferred release"
        held_by = st["owner"]
        assert held_by == lock.owner, st
        await asyncio.sleep(0.02)
    await lock.release()
    assert await astatus(c, KEY) is None


def test_async_deferred_release_never_frees_a_new_grant_owner_given(
    server_factory: ServerFactory,
) -> None:
    s = debug_server(server_factory)
    run_async(s, lambda c: _late_acquire_then_new_grant(s, c, "o1"))


def test_async_deferred_release_never_frees_a_new_grant_default_owner(
    server_factory: ServerFactory,
) -> None:
    s = debug_server(server_factory)
    run_async(s, lambda c: _late_acquire_then_new_grant(s, c, None))


# ---- 2. a refusal is not a lost reply ------------------------------------------------------


def test_refused_acquire_leaves_no_background_release(replica_pair: ReplicaPair) -> None:
    replica = replica_pair.replica
    client = replica.client()
    try:
        lock = redis_fence.Lock(client, KEY, ttl=30, io_timeout=0.5)
        owner = lock.owner
        # Threads of earlier tests may end meanwhile: count only the ones started here.
        before = set(threading.enumerate())
        for _ in range(20):
            with pytest.raises(redis.exceptions.ReadOnlyError):
                lock.acquire()
        time.sleep(0.2)
        started = [t.name for t in threading.enumerate() if t not in before]
        assert started == [], f"threads started by refused acquires: {started}"
        assert lock.owner == owner
        assert lock.token is None and not lock.held
    finally:
        client.close()


def test_async_refused_acquire_leaves_no_background_release(replica_pair: ReplicaPair) -> None:
    replica = replica_pair.replica

    async def body(c: redis.asyncio.Redis) -> None:
        lock = redis_fence.asyncio.Lock(c, KEY, ttl=30, io_timeout=0.5)
        owner = lock.owner
        assert await lock.status() is None  # connections opened before the baseline
        await asyncio.sleep(0.1)
        tasks = len(asyncio.all_tasks())
        for _ in range(20):
            with pytest.raises(redis.exceptions.ReadOnlyError):
                await lock.acquire()
        await asyncio.sleep(0.2)
        assert len(asyncio.all_tasks()) == tasks, asyncio.all_tasks()
        assert lock.owner == owner
        assert lock.token is None and not lock.held

    run_async(replica, body)


# ---- 3. per-loop clients go with their loops ------------------------------------------------


def _connected(server: Server) -> int:
    return int(server.info("clients")["connected_clients"])


def test_async_clients_of_ended_loops_are_dropped(server_factory: ServerFactory) -> None:
    s = server_factory()
    # The caller's client is only a source of settings for the lock's own clients (one per
    # event loop): one of it serves every asyncio.run below.
    caller = redis.asyncio.Redis(host=s.host, port=s.port)
    baseline = _connected(s)

    async def once(i: int) -> None:
        lock = redis_fence.asyncio.Lock(caller, f"{KEY}:{i}", ttl=30, io_timeout=2)
        token = await lock.acquire()
        assert isinstance(token, int) and token > 0
        await lock.release()

    for i in range(30):
        asyncio.run(once(i))
    deadline = time.monotonic() + 5
    while True:
        gc.collect()
        now = _connected(s)
        if now <= baseline + 5:
            break
        assert time.monotonic() < deadline, f"connected_clients {now}, baseline {baseline}"
        time.sleep(0.05)
