"""redis_fence locks through a failover (replica_pair): a lease lost with its master, tokens
that stay fenced on the promoted replica, and a waiter told UNBLOCKED when its master becomes a
replica."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from _servers import ReplicaPair

import redis_fence
import redis_fence.asyncio
from redis_fence import CommandError, Deducted, Lock, LockLost, StaleToken, Stock, Unblocked

LOCK_KEY, STOCK_KEY = "{sku:f}:lock", "{sku:f}"


def raw_status(client: Any, key: str = LOCK_KEY) -> dict[str, Any] | None:
    reply = client.execute_command("LOCK.STATUS", key)
    if reply is None:
        return None
    items = (
        list(reply.items())
        if isinstance(reply, dict)
        else [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
    )
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in items
    }


def tok(token: int | None) -> int:
    """A token that must have been granted."""
    assert isinstance(token, int) and token > 0, token
    return token


def held(client: Any, key: str = LOCK_KEY) -> dict[str, Any]:
    s = raw_status(client, key)
    assert s is not None, f"{key} is free"
    return s


def wait_until(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
        time.sleep(0.005)


def spawn(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as e:
            fut.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return fut


class LostRecorder:
    def __init__(self) -> None:
        self.calls: list[LockLost] = []
        self.at: float | None = None
        self.event = threading.Event()

    def __call__(self, lost: LockLost) -> None:
        self.calls.append(lost)
        if self.at is None:
            self.at = time.monotonic()
        self.event.set()


def _new_holder_on(client: redis.Redis, old: int) -> int:
    """The next grant on the promoted replica (another owner), once the old lease is gone."""
    token = client.execute_command("LOCK.ACQUIRE", LOCK_KEY, "new-holder", 30000, "WAIT", 10000)
    assert isinstance(token, int), token
    assert token > old, f"the promoted replica granted {token}, not above the lost {old}"
    return token


def _fenced_out(client: redis.Redis, old: int, new: int, remaining: int) -> None:
    stock = Stock(client, STOCK_KEY)
    assert stock.deduct(1, id="order-new", fence=new) == Deducted(remaining)
    with pytest.raises(StaleToken) as info:
        stock.deduct(1, id="order-old-late", fence=old)
    assert (info.value.token, info.value.highest) == (old, new)
    assert stock.get() == remaining
    assert stock.request("order-old-late") is None


def test_lease_lost_with_the_master_and_fenced_on_the_promoted_replica(
    replica_pair: ReplicaPair,
) -> None:
    pair = replica_pair
    master, replica = pair.master.client(), pair.replica.client()
    try:
        Stock(master, STOCK_KEY).set(10)
        lost = LostRecorder()
        ttl, io = 1.0, 0.3
        lock = Lock(master, LOCK_KEY, ttl=ttl, watchdog=1000, io_timeout=io, on_lost=lost)
        old = tok(lock.acquire())
        assert isinstance(old, int)
        assert Stock(master, STOCK_KEY).deduct(1, id="order-old", fence=old) == Deducted(9)
        pair.wait_in_sync()
        assert held(replica)["token"] == old

        pair.master.kill()
        killed = time.monotonic()
        pair.promote_replica()
        assert lost.event.wait(ttl + 10), "on_lost was not called"
        # When the lease really ended on the promoted replica (never before), and within
        # the TTL plus one watchdog interval and the I/O bounds of the failed renewals.
        s = raw_status(replica)
        assert s is None or s["ttl"] <= 150, f"reported lost while the lease had {s} left"
        after = lost.at - killed  # type: ignore[operator]
        assert after <= ttl + lock.watchdog_interval + 2 * io + 1.5, f"lost after {after:.2f} s"
        err = lost.calls[0]
        assert err.token == old and lock.lost and "renewal" in (lock.lost_reason or "")
        with pytest.raises(LockLost):
            lock.check()

        new = _new_holder_on(replica, old)
        _fenced_out(replica, old, new, remaining=8)
        with pytest.raises(LockLost):
            lock.release()
        assert len(lost.calls) == 1
    finally:
        master.close()
        replica.close()


def test_tokens_stay_fenced_when_the_grant_never_reached_the_replica(
    replica_pair: ReplicaPair,
) -> None:
    """A split: the replica is promoted while the old master still takes a grant and a fenced
    deduction, then dies. The new master never saw either, yet its next grant is above the old
    token (its clock), so the old holder's token is refused there."""
    pair = replica_pair
    master, replica = pair.master.client(), pair.replica.client()
    try:
        Stock(master, STOCK_KEY).set(10)
        pair.wait_in_sync()
        pair.promote_replica()
        lock = Lock(master, LOCK_KEY, ttl=30)
        old = tok(lock.acquire())
        assert isinstance(old, int)
        assert Stock(master, STOCK_KEY).deduct(1, id="order-old", fence=old) == Deducted(9)
        pair.master.kill()
        assert raw_status(replica) is None  # the grant was lost with the old master
        assert Stock(replica, STOCK_KEY).get() == 10  # and so was the deduction
        new = _new_holder_on(replica, old)
        _fenced_out(replica, old, new, remaining=9)
        with pytest.raises(redis.exceptions.ConnectionError):
            lock.release()
    finally:
        master.close()
        replica.close()


def test_waiter_gets_unblocked_when_its_master_becomes_a_replica(
    replica_pair: ReplicaPair,
) -> None:
    pair = replica_pair
    master = pair.master.client()
    try:
        master.execute_command("LOCK.ACQUIRE", LOCK_KEY, "holder", 30000)
        lock = Lock(master, LOCK_KEY, owner="waiter", ttl=10, wait=30)
        fut = spawn(lock.acquire)
        wait_until("queued", lambda: (raw_status(master) or {}).get("waiters") == 1)
        started = time.monotonic()
        pair.failover()  # the old master becomes a replica of the promoted one
        err = fut.exception(timeout=15)
        assert time.monotonic() - started < 15
        assert isinstance(err, Unblocked), repr(err)
        assert isinstance(err, CommandError) and isinstance(err, redis.exceptions.ResponseError)
        assert err.code == "UNBLOCKED" and str(err).startswith("UNBLOCKED")
        assert lock.token is None
        # Nothing was granted to the waiter on the new master.
        with pair.master.client() as new_master:
            s = raw_status(new_master)
            assert s is not None and s["owner"] == "holder"
    finally:
        master.close()


def test_async_waiter_gets_unblocked(replica_pair: ReplicaPair) -> None:
    pair = replica_pair

    async def main() -> None:
        m = redis.asyncio.Redis(host=pair.master.host, port=pair.master.port)
        try:
            await m.execute_command("LOCK.ACQUIRE", LOCK_KEY, "holder", 30000)
            waiter = redis_fence.asyncio.Lock(m, LOCK_KEY, owner="waiter", ttl=10, wait=30)
            task = asyncio.ensure_future(waiter.acquire())
            while (raw_status(m_sync) or {}).get("waiters") != 1:
                await asyncio.sleep(0.01)
            pair.failover()  # blocks the loop: the reply waits in the socket
            with pytest.raises(Unblocked):
                await asyncio.wait_for(task, 15)
            assert waiter.token is None
        finally:
            await m.aclose()

    with pair.master.client() as m_sync:
        asyncio.run(main())


def test_async_lease_lost_with_the_master_and_fenced(replica_pair: ReplicaPair) -> None:
    pair = replica_pair
    ttl, io = 1.0, 0.3

    async def main() -> None:
        m = redis.asyncio.Redis(host=pair.master.host, port=pair.master.port)
        try:
            await redis_fence.asyncio.Stock(m, STOCK_KEY).set(10)
            lost = LostRecorder()
            lock = redis_fence.asyncio.Lock(
                m, LOCK_KEY, ttl=ttl, watchdog=1000, io_timeout=io, on_lost=lost
            )
            old = tok(await lock.acquire())
            assert isinstance(old, int)
            fenced = await redis_fence.asyncio.Stock(m, STOCK_KEY).deduct(
                1, id="order-old", fence=old
            )
            assert fenced == Deducted(9)
            pair.wait_in_sync()
            pair.master.kill()
            killed = time.monotonic()
            pair.promote_replica()
            err = await asyncio.wait_for(lock.wait_lost(), ttl + 10)
            with pair.replica.client() as promoted:
                s = raw_status(promoted)
                assert s is None or s["ttl"] <= 150, f"reported lost while the lease had {s}"
                after = lost.at - killed  # type: ignore[operator]
                assert after <= ttl + lock.watchdog_interval + 2 * io + 1.5, f"{after:.2f} s"
                assert err.token == old and lost.calls == [err]
                new = _new_holder_on(promoted, old)
                _fenced_out(promoted, old, new, remaining=8)
            with pytest.raises(LockLost):
                await lock.release()
            assert len(lost.calls) == 1
        finally:
            await m.aclose()

    asyncio.run(main())
