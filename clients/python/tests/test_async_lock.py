"""redis_fence.asyncio.Lock against real servers: the twin of test_lock.py.

Each test is a plain function running one coroutine with asyncio.run; its clients are made
inside the coroutine from the fixtures' host and port. Tests wait for events (a server-side
waiter count, wait_lost(), a MONITOR line) rather than sleeping for the work to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from _servers import Server
from conftest import ServerFactory
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from test_lock import cmdstat

from redis_fence import Deducted, LockInUse, LockLost, LockNotAcquired, StaleToken
from redis_fence.asyncio import Lock, Stock

KEY = "test:alock"


# ---- helpers ---------------------------------------------------------------------------------


def _fields(reply: Any) -> dict[str, Any] | None:
    if reply is None:
        return None
    items = (
        list(reply.items())
        if isinstance(reply, dict)
        else [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
    )
    out = {}
    for k, v in items:
        k = k.decode() if isinstance(k, bytes) else k
        out[k] = v.decode() if isinstance(v, bytes) else v
    return out


async def status(client: Any, key: str = KEY) -> dict[str, Any] | None:
    """LOCK.STATUS read without the package."""
    return _fields(await client.execute_command("LOCK.STATUS", key))


async def held(client: Any, key: str = KEY) -> dict[str, Any]:
    """LOCK.STATUS of a lock that must be held."""
    s = await status(client, key)
    assert s is not None, f"{key} is free"
    return s


def sync_status(client: Any, key: str = KEY) -> dict[str, Any] | None:
    return _fields(client.execute_command("LOCK.STATUS", key))


async def waiters(client: Any, key: str = KEY) -> int:
    s = await status(client, key)
    return 0 if s is None else s["waiters"]


def tok(token: int | None) -> int:
    """A token that must have been granted."""
    assert isinstance(token, int) and token > 0, token
    return token


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
        await asyncio.sleep(0.005)


def run(server: Server, body: Callable[[redis.asyncio.Redis], Awaitable[None]], **kw: Any) -> None:
    """asyncio.run(body(client)) with a client on ``server`` made inside the loop."""

    async def main() -> None:
        client = redis.asyncio.Redis(host=server.host, port=server.port, **kw)
        try:
            await body(client)
        finally:
            await client.aclose()

    asyncio.run(main())


class Monitor:
    """MONITOR on a raw socket (a thread reads it): the commands the server ran."""

    _ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        self.lines: list[list[str]] = []
        self._lock = threading.Lock()
        buf = b""
        while b"\r\n" not in buf:
            buf += self.sock.recv(4096)
        assert buf.startswith(b"+OK"), buf
        self._rest = buf.split(b"\r\n", 1)[1]
        self.sock.settimeout(None)
        self._n = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = self._rest
        while True:
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                args = [m.group(1) for m in self._ARG.finditer(line.decode(errors="replace"))]
                with self._lock:
                    self.lines.append(args)
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data

    async def sync(self, client: Any) -> None:
        self._n += 1
        mark = f"amonitor-mark-{id(self)}-{self._n}"
        await client.execute_command("ECHO", mark)

        async def seen() -> bool:
            with self._lock:
                return any(mark in a for a in self.lines)

        await until("MONITOR showing the mark", seen)

    def commands(self, name: str, key: str = KEY) -> list[list[str]]:
        with self._lock:
            return [a for a in self.lines if a and a[0].upper() == name and a[1:2] == [key]]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def monitor(server: Server, r: redis.Redis) -> Any:
    m = Monitor(server.host, server.port)
    yield m
    m.close()


def watchdog_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if not t.done() and "_watch" in repr(t.get_coro())]


class LostRecorder:
    def __init__(self) -> None:
        self.calls: list[LockLost] = []
        self.at: float | None = None

    def __call__(self, lost: LockLost) -> None:
        self.calls.append(lost)
        if self.at is None:
            self.at = time.monotonic()


# ---- constructor -----------------------------------------------------------------------------


def test_constructor(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        for ttl in (0, -1, math.nan, math.inf):
            with pytest.raises(ValueError):
                Lock(c, KEY, ttl=ttl)
        for wait in (0, -0.5, math.nan, -math.inf):
            with pytest.raises(ValueError):
                Lock(c, KEY, wait=wait)
        for watchdog in (-1, 2.5, True):
            with pytest.raises(ValueError):
                Lock(c, KEY, watchdog=watchdog)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            Lock(c, KEY, ttl=1, watchdog=1, watchdog_interval=2)
        with pytest.raises(ValueError):
            Lock(c, KEY, owner="")
        a, b = Lock(c, KEY), Lock(c, KEY)
        assert a.owner and a.owner != b.owner
        assert a.token is None and not a.held and not a.lost
        with pytest.raises(LockNotAcquired):
            await a.release()
        with pytest.raises(LockNotAcquired):
            await a.renew()
        assert await c.execute_command("DBSIZE") == 0

    run(server, body)


def test_arguments_on_the_wire(server: Server, r: redis.Redis, monitor: Monitor) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        plain = Lock(c, KEY, owner="o-plain", ttl=0.25)
        t = tok(await plain.acquire())
        await plain.renew(ttl=2)
        await plain.release()
        forever = Lock(c, KEY, owner="o-inf", ttl=1.5, wait=math.inf)
        t2 = tok(await forever.acquire())
        await forever.release()
        await Lock(c, KEY, owner="o-w", ttl=0.0001, wait=0.0101).acquire()
        await monitor.sync(c)
        assert monitor.commands("LOCK.ACQUIRE") == [
            ["LOCK.ACQUIRE", KEY, "o-plain", "250"],
            ["LOCK.ACQUIRE", KEY, "o-inf", "1500", "WAIT", "0"],
            ["LOCK.ACQUIRE", KEY, "o-w", "1", "WAIT", "11"],
        ]
        assert monitor.commands("LOCK.RENEW") == [
            ["LOCK.RENEW", KEY, "o-plain", "2000", "TOKEN", str(t)]
        ]
        assert monitor.commands("LOCK.RELEASE") == [
            ["LOCK.RELEASE", KEY, "o-plain", "TOKEN", str(t)],
            ["LOCK.RELEASE", KEY, "o-inf", "TOKEN", str(t2)],
        ]

    run(server, body)


# ---- async with / acquire / release / renew ----------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_async_with_returns_the_token_and_releases(
    server: Server, r: redis.Redis, protocol: int
) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        lock = Lock(c, KEY, ttl=10)
        async with lock as token:
            assert isinstance(token, int) and token == lock.token == lock.check()
            s = await status(c)
            assert s is not None and (s["owner"], s["token"]) == (lock.owner, token)
            assert 9000 < s["ttl"] <= 10000
            st = await lock.status()
            assert st is not None and (st.owner, st.token) == (lock.owner, token)
        assert await status(c) is None and await lock.status() is None

    run(server, body, protocol=protocol, decode_responses=(protocol == 2))


def test_async_with_releases_when_the_block_raises(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        with pytest.raises(KeyError):
            async with Lock(c, KEY, ttl=10) as token:
                assert (await held(c))["token"] == token
                raise KeyError("boom")
        assert await status(c) is None

    run(server, body)


def test_async_with_held_by_another_owner(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        other = await c.execute_command("LOCK.ACQUIRE", KEY, "someone-else", 30000)
        ran = []
        with pytest.raises(LockNotAcquired) as info:
            async with Lock(c, KEY, ttl=10):
                ran.append(1)
        assert isinstance(info.value, redis.exceptions.LockError)
        assert ran == []
        s = await status(c)
        assert s is not None and (s["owner"], s["token"]) == ("someone-else", other)

    run(server, body)


def test_async_acquire_renew_release(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        a, b = Lock(c, KEY, ttl=10), Lock(c, KEY, ttl=10)
        t1 = tok(await a.acquire())
        assert isinstance(t1, int)
        assert await b.acquire() is None and b.token is None
        assert await a.renew(ttl=60) == t1
        assert (await held(c))["ttl"] > 59000
        assert await a.renew() == t1
        assert (await held(c))["ttl"] <= 10000
        await a.release()
        assert await status(c) is None
        t2 = tok(await b.acquire())
        assert t2 > t1
        await b.release()

    run(server, body)


def test_async_ended_grant_raises_lock_lost(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        lost = LostRecorder()
        lock = Lock(c, KEY, ttl=0.05, on_lost=lost)
        token = tok(await lock.acquire())
        await until("expiry", lambda: _is_none(status(c)))
        with pytest.raises(LockLost) as info:
            await lock.renew()
        assert isinstance(info.value, redis.exceptions.LockNotOwnedError)
        assert info.value.token == token and lock.lost and lock.lost_reason
        assert await lock.wait_lost() is info.value
        with pytest.raises(LockLost):
            lock.check()
        with pytest.raises(LockLost):
            await lock.release()
        assert len(lost.calls) == 1
        assert await status(c) is None
        # release() alone, on a grant that changed hands.
        lock2 = Lock(c, KEY, ttl=10)
        await lock2.acquire()
        await c.delete(KEY)
        other = await c.execute_command("LOCK.ACQUIRE", KEY, "other", 30000)
        with pytest.raises(LockLost):
            await lock2.release()
        assert (await held(c))["token"] == other

    run(server, body)


async def _is_none(aw: Awaitable[Any]) -> bool:
    return (await aw) is None


def test_async_stale_handle_never_touches_a_newer_grant(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        stale = Lock(c, KEY, owner="worker-7", ttl=0.05)
        t1 = tok(await stale.acquire())
        await until("expiry", lambda: _is_none(status(c)))
        fresh = Lock(c, KEY, owner="worker-7", ttl=30)
        t2 = tok(await fresh.acquire())
        assert t2 > t1
        with pytest.raises(LockLost):
            await stale.renew()
        with pytest.raises(LockLost):
            await stale.release()
        s = await status(c)
        assert s is not None and (s["owner"], s["token"]) == ("worker-7", t2)
        assert s["ttl"] > 29000
        await fresh.release()

    run(server, body)


# ---- one Lock object per holder ---------------------------------------------------------------


def test_async_tasks_sharing_one_lock_object_get_one_grant(server: Server, r: redis.Redis) -> None:
    """Tasks racing on one Lock object: one gets the grant, every other one LockInUse (none a
    copy of the token), round after round; only the winner's LOCK.ACQUIRE is sent."""
    tasks, rounds = 8, 10
    acquires = cmdstat(server, "LOCK.ACQUIRE")[0]

    async def body(c: redis.asyncio.Redis) -> None:
        lock = Lock(c, KEY, ttl=30)
        tokens: list[int] = []
        for _ in range(rounds):
            results = await asyncio.gather(
                *(lock.acquire() for _ in range(tasks)), return_exceptions=True
            )
            granted = [x for x in results if isinstance(x, int)]
            assert len(granted) == 1, results
            refused = [x for x in results if not isinstance(x, int)]
            assert len(refused) == tasks - 1 and all(isinstance(x, LockInUse) for x in refused)
            s = await held(c)
            assert (s["owner"], s["token"]) == (lock.owner, granted[0]) == (lock.owner, lock.token)
            tokens.append(granted[0])
            with pytest.raises(LockInUse):
                await lock.acquire()  # held
            await lock.release()
            assert await status(c) is None
        assert tokens == sorted(set(tokens)), f"a token was handed out twice: {tokens}"

    run(server, body)
    assert cmdstat(server, "LOCK.ACQUIRE")[0] - acquires == rounds


def test_async_acquire_while_another_task_waits_in_acquire(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        await c.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
        lock = Lock(c, KEY, ttl=30, wait=30)
        task = asyncio.ensure_future(lock.acquire())
        await until("the first acquire() queued", lambda: _eq(waiters(c), 1))
        for _ in range(2):
            with pytest.raises(LockInUse):
                await lock.acquire()
        assert await waiters(c) == 1 and not task.done()
        assert await c.execute_command("LOCK.RELEASE", KEY, "holder") == 1
        token = tok(await asyncio.wait_for(task, 10))
        assert (await held(c))["token"] == token
        await lock.release()
        assert tok(await lock.acquire()) > token
        await lock.release()

    run(server, body)


# ---- WAIT ------------------------------------------------------------------------------------


def test_async_wait_fifo(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        holder = Lock(c, KEY, owner="holder", ttl=30)
        t0 = tok(await holder.acquire())
        w1 = Lock(c, KEY, owner="w1", ttl=30, wait=20)
        w2 = Lock(c, KEY, owner="w2", ttl=30, wait=20)
        f1 = asyncio.ensure_future(w1.acquire())
        await until("w1 queued", lambda: _eq(waiters(c), 1))
        f2 = asyncio.ensure_future(w2.acquire())
        await until("w2 queued", lambda: _eq(waiters(c), 2))
        await holder.release()
        t1 = tok(await asyncio.wait_for(f1, 10))
        assert t1 > t0
        s = await status(c)
        assert s is not None and (s["owner"], s["waiters"]) == ("w1", 1)
        assert not f2.done()
        await w1.release()
        t2 = tok(await asyncio.wait_for(f2, 10))
        assert t2 > t1 and (await held(c))["owner"] == "w2"
        await w2.release()

    run(server, body)


async def _eq(aw: Awaitable[Any], value: Any) -> bool:
    return bool((await aw) == value)


def test_async_wait_runs_out(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        await c.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
        lock = Lock(c, KEY, ttl=10, wait=0.4)
        started = time.monotonic()
        assert await lock.acquire() is None
        elapsed = time.monotonic() - started
        assert 0.4 - 0.002 <= elapsed < 0.4 + 2.0, f"{elapsed:.3f} s"
        s = await status(c)
        assert s is not None and (s["owner"], s["waiters"]) == ("holder", 0)

    run(server, body)


def test_async_wait_inf_waits_until_release(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        await c.execute_command("LOCK.ACQUIRE", KEY, "holder", 60000)
        lock = Lock(c, KEY, ttl=10, wait=math.inf, io_timeout=0.1)
        task = asyncio.ensure_future(lock.acquire())
        await until("queued", lambda: _eq(waiters(c), 1))
        await asyncio.sleep(0.5)  # several io_timeouts: a bounded read would have given up
        assert not task.done() and await waiters(c) == 1
        await c.execute_command("LOCK.RELEASE", KEY, "holder")
        token = tok(await asyncio.wait_for(task, 10))
        assert (await held(c))["token"] == token
        await lock.release()

    run(server, body)


# ---- abandoned waits -------------------------------------------------------------------------


def test_async_cancelled_wait_leaves_no_waiter(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        await c.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
        lock = Lock(c, KEY, owner="quitter", ttl=30, wait=30)
        task = asyncio.ensure_future(lock.acquire())
        await until("queued", lambda: _eq(waiters(c), 1))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The clean-up ran before the cancellation reached us.
        assert await waiters(c) == 0
        assert lock.token is None
        assert await c.execute_command("LOCK.RELEASE", KEY, "holder") == 1
        assert await status(c) is None, "the cancelled waiter was granted the lock"

    run(server, body)


def test_async_wait_for_timeout_leaves_no_waiter(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        await c.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
        lock = Lock(c, KEY, owner="impatient", ttl=30, wait=30)
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(lock.acquire(), 0.2)
        assert time.monotonic() - started < 0.2 + 2.0
        assert await waiters(c) == 0
        assert await c.execute_command("LOCK.RELEASE", KEY, "holder") == 1
        assert await status(c) is None

    run(server, body)


def test_async_cancelled_after_the_grant_passes_the_lock_on(server: Server, r: redis.Redis) -> None:
    """The server grants the lock to the waiting task, but the task is cancelled before it
    reads the reply: the grant is released, and the next waiter gets the lock."""

    async def body(c: redis.asyncio.Redis) -> None:
        await c.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
        lock = Lock(c, KEY, owner="quitter", ttl=30, wait=30)
        nxt = Lock(c, KEY, owner="next", ttl=30, wait=30)
        task = asyncio.ensure_future(lock.acquire())
        await until("queued", lambda: _eq(waiters(c), 1))
        task2 = asyncio.ensure_future(nxt.acquire())
        await until("next queued", lambda: _eq(waiters(c), 2))
        # The event loop is held (sync calls) while the grant is made, then the task is
        # cancelled before the loop can read the reply.
        assert r.execute_command("LOCK.RELEASE", KEY, "holder") == 1
        s = sync_status(r)
        assert s is not None and s["owner"] == "quitter"
        ghost = s["token"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t_next = tok(await asyncio.wait_for(task2, 10))
        assert t_next > ghost
        s = await status(c)
        assert s is not None and (s["owner"], s["token"], s["waiters"]) == ("next", t_next, 0)
        await nxt.release()

    run(server, body)


# ---- watchdog --------------------------------------------------------------------------------


def test_async_watchdog_keeps_the_lease_alive_and_stops(
    server: Server, r: redis.Redis, monitor: Monitor
) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        lost = LostRecorder()
        lock = Lock(c, KEY, ttl=0.5, watchdog=1000, on_lost=lost)
        async with lock as token:
            started = time.monotonic()
            while time.monotonic() - started < 2.0:  # the work: four TTLs
                assert lock.check() == token
                await asyncio.sleep(0.05)
            s = await status(c)
            assert s is not None and s["token"] == token and 0 < s["ttl"] <= 500
            assert watchdog_tasks()
        assert await status(c) is None
        assert not watchdog_tasks()
        await monitor.sync(c)
        renewals = len(monitor.commands("LOCK.RENEW"))
        assert renewals >= 4
        await asyncio.sleep(3 * lock.watchdog_interval)
        await monitor.sync(c)
        assert len(monitor.commands("LOCK.RENEW")) == renewals, "LOCK.RENEW after release"
        assert lost.calls == []

    run(server, body)


@pytest.mark.parametrize("same_owner", [False, True], ids=["other-owner", "same-owner"])
def test_async_watchdog_never_renews_a_grant_that_changed_hands(
    server: Server, r: redis.Redis, monitor: Monitor, same_owner: bool
) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        lost = LostRecorder()
        lock = Lock(c, KEY, owner="job", ttl=0.5, watchdog=1000, on_lost=lost)
        token = tok(await lock.acquire())

        async def renewed() -> bool:
            await monitor.sync(c)
            return bool(monitor.commands("LOCK.RENEW"))

        await until("a renewal", renewed)
        new_owner = "job" if same_owner else "intruder"
        await c.delete(KEY)
        other = await c.execute_command("LOCK.ACQUIRE", KEY, new_owner, 100_000)
        err = await asyncio.wait_for(lock.wait_lost(), 5)
        assert err.token == token and lock.lost and "LOCK.RENEW" in err.reason
        with pytest.raises(LockLost):
            lock.check()
        await until("the watchdog ending", _no_watchdog)
        await asyncio.sleep(3 * lock.watchdog_interval)
        await monitor.sync(c)
        for cmd in monitor.commands("LOCK.RENEW"):
            assert cmd[-2:] == ["TOKEN", str(token)]
        s = await status(c)
        assert s is not None and (s["owner"], s["token"]) == (new_owner, other)
        assert s["ttl"] > 90_000, "the other grant's TTL was touched"
        with pytest.raises(LockLost):
            await lock.release()
        assert len(lost.calls) == 1
        assert (await held(c))["token"] == other

    run(server, body)


async def _no_watchdog() -> bool:
    return not watchdog_tasks()


def test_async_with_exit_raises_lock_lost(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        lock = Lock(c, KEY, ttl=0.5, watchdog=1000)
        with pytest.raises(LockLost) as info:
            async with lock as token:
                await c.delete(KEY)
                await c.execute_command("LOCK.ACQUIRE", KEY, "intruder", 100_000)
                await asyncio.wait_for(lock.wait_lost(), 5)
        assert info.value.token == token
        assert (await held(c))["owner"] == "intruder"

    run(server, body)


def test_async_watchdog_bound(server: Server, r: redis.Redis, monitor: Monitor) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        lost = LostRecorder()
        lock = Lock(c, KEY, ttl=0.5, watchdog=2, on_lost=lost)
        acquired = time.monotonic()
        token = tok(await lock.acquire())
        err = await asyncio.wait_for(lock.wait_lost(), 10)
        after = lost.at - acquired  # type: ignore[operator]
        assert 2 * lock.watchdog_interval + 0.5 - 0.02 <= after < 2 * lock.watchdog_interval + 2.5
        assert err.token == token and "2 renewals" in err.reason
        await until("the key expiring", lambda: _is_none(status(c)), timeout=1.0)
        await monitor.sync(c)
        assert len(monitor.commands("LOCK.RENEW")) == 2
        with pytest.raises(LockLost):
            await lock.release()
        assert len(lost.calls) == 1

    run(server, body)


# ---- wait_lost ---------------------------------------------------------------------------------


def test_async_wait_lost_without_a_watchdog_when_the_lease_runs_out(
    server: Server, r: redis.Redis
) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        lost = LostRecorder()
        lock = Lock(c, KEY, ttl=0.3, on_lost=lost)
        started = time.monotonic()
        token = tok(await lock.acquire())
        err = await asyncio.wait_for(lock.wait_lost(), 10)
        after = time.monotonic() - started
        assert isinstance(err, LockLost) and err.token == token
        assert after >= 0.3 - 0.01, f"reported lost after {after:.3f} s, before the lease ended"
        assert lock.lost and not lock.held and lost.calls == [err]
        assert await lock.wait_lost() is err
        with pytest.raises(LockLost):
            lock.check()
        await until("the key expiring", lambda: _is_none(status(c)), timeout=5)
        with pytest.raises(LockLost):
            await lock.release()
        assert len(lost.calls) == 1

    run(server, body)


def awaiting_in(task: asyncio.Task[Any], names: set[str]) -> bool:
    """Whether ``task`` is suspended inside a coroutine named in ``names`` (its await chain)."""
    coro: Any = task.get_coro()
    while coro is not None:
        code = getattr(coro, "cr_code", None)
        if code is not None and code.co_name in names:
            return True
        coro = getattr(coro, "cr_await", None)
    return False


async def _key_free(c: redis.asyncio.Redis) -> bool:
    return await c.execute_command("LOCK.STATUS", KEY) is None


def test_async_cancelled_release_raises_cancelled_error(server_factory: ServerFactory) -> None:
    s = server_factory()

    async def body(c: redis.asyncio.Redis) -> None:
        lock = Lock(c, KEY, ttl=60, watchdog=1000, watchdog_interval=0.05, io_timeout=60)
        await lock.acquire()
        s.sigstop()
        try:
            task = asyncio.ensure_future(lock.release())

            async def stuck() -> bool:
                # The release runs in a task of its own (so a cancelled release still
                # releases); wait until that one is stuck on the stopped server.
                return any(
                    awaiting_in(t, {"call", "_stop_watchdog"})
                    for t in asyncio.all_tasks()
                    if t is not task and awaiting_in(t, {"_release"})
                )

            await until("release() awaiting the stopped server", stuck)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=10)
            assert task in done, "the cancelled release() did not end"
            assert task.cancelled(), f"release() swallowed its cancellation: {task!r}"
            # ... and the release itself goes on: once the server runs again, the key is free.
            s.sigcont()
            free = await until(
                "the release went on after the cancellation",
                lambda: _key_free(c),
            )
            assert free
        finally:
            s.sigcont()

    run(s, body, socket_timeout=None)


# ---- bounded network -------------------------------------------------------------------------


def test_async_release_on_a_stopped_server_is_bounded(server_factory: ServerFactory) -> None:
    s = server_factory()
    io = 0.3

    async def body(c: redis.asyncio.Redis) -> None:
        lock = Lock(c, KEY, ttl=3600, watchdog=10_000, watchdog_interval=0.05, io_timeout=io)
        await lock.acquire()
        s.sigstop()
        try:
            started = time.monotonic()
            with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                await lock.release()
            elapsed = time.monotonic() - started
            assert elapsed < 4 * io + 1.0, f"release took {elapsed:.2f} s"
            started = time.monotonic()
            with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                await Lock(c, "test:other", ttl=10, io_timeout=io).acquire()
            assert time.monotonic() - started < 2 * io + 1.0
        finally:
            s.sigcont()

    run(s, body, socket_timeout=None)


async def _acquire_on_stopped(s: Server, c: redis.asyncio.Redis, io: float) -> BaseException:
    s.sigstop()
    try:
        lock = Lock(c, KEY, ttl=10, wait=math.inf, io_timeout=io)
        started = time.monotonic()
        with pytest.raises(Exception) as info:
            await asyncio.wait_for(lock.acquire(), 4 * io + 5.0)
        elapsed = time.monotonic() - started
        assert elapsed < 4 * io + 1.0, f"gave up after {elapsed:.2f} s"
        return info.value
    finally:
        s.sigcont()


def test_async_waiting_acquire_on_a_stopped_server_is_bounded(
    server_factory: ServerFactory,
) -> None:
    s = server_factory()

    async def body(c: redis.asyncio.Redis) -> None:
        await _acquire_on_stopped(s, c, 0.3)

    run(s, body, socket_timeout=None)


def test_async_waiting_acquire_timeout_is_a_redis_error(server_factory: ServerFactory) -> None:
    s = server_factory()

    async def body(c: redis.asyncio.Redis) -> None:
        err = await _acquire_on_stopped(s, c, 0.3)
        assert isinstance(err, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)), (
            repr(err)
        )

    run(s, body, socket_timeout=None)


# ---- Redis Cluster ---------------------------------------------------------------------------


def _acluster(cluster: Any) -> AsyncRedisCluster:
    return AsyncRedisCluster(
        startup_nodes=[AsyncClusterNode(h, p) for h, p in cluster.startup_nodes()],
        socket_timeout=30,
    )


def test_async_cluster_lock_on_every_master(cluster: Any, rc: RedisCluster) -> None:
    keys: dict[int, str] = {}
    for i in range(200):
        key = f"{{sku:{i}}}:lock"
        keys.setdefault(cluster.node_for_slot(rc.keyslot(key)).port, key)
    assert len(keys) == len(cluster.nodes)

    async def main() -> None:
        ac = _acluster(cluster)
        try:
            for port, key in keys.items():
                lock = Lock(ac, key, ttl=10)
                token = tok(await lock.acquire())
                assert isinstance(token, int)
                with redis.Redis(host="127.0.0.1", port=port) as node:
                    s = sync_status(node, key)
                assert s is not None and (s["owner"], s["token"]) == (lock.owner, token)
                assert await lock.renew(ttl=60) == token
                assert (await held(ac, key))["ttl"] > 59000
                st = await lock.status()
                assert st is not None and st.token == token
                assert await Lock(ac, key, ttl=10).acquire() is None
                await lock.release()
                assert await status(ac, key) is None
        finally:
            await ac.aclose()

    asyncio.run(main())


def test_async_cluster_wait_across_two_clients(cluster: Any, rc: RedisCluster) -> None:
    key = "{sku:1}:lock"

    async def main() -> None:
        a, b = _acluster(cluster), _acluster(cluster)
        try:
            holder = Lock(a, key, ttl=30)
            t0 = tok(await holder.acquire())
            waiter = Lock(b, key, ttl=30, wait=20)
            task = asyncio.ensure_future(waiter.acquire())
            await until("queued", lambda: _eq(waiters(a, key), 1))
            await holder.release()
            t1 = tok(await asyncio.wait_for(task, 10))
            assert t1 > t0 and (await held(a, key))["owner"] == waiter.owner
            # A cancelled cluster waiter is taken out of the queue too.
            quitter = Lock(a, key, ttl=30, wait=20)
            task = asyncio.ensure_future(quitter.acquire())
            await until("queued", lambda: _eq(waiters(a, key), 1))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await waiters(a, key) == 0
            await waiter.release()
            assert await status(a, key) is None
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(main())


def test_async_cluster_lock_and_stock_in_one_slot(cluster: Any, rc: RedisCluster) -> None:
    async def main() -> None:
        ac = _acluster(cluster)
        try:
            stock = Stock(ac, "{sku:1}")
            await stock.set(10)
            async with Lock(ac, "{sku:1}:lock", ttl=10) as old:
                assert await stock.deduct(1, id="order-1", fence=old) == Deducted(9)
            async with Lock(ac, "{sku:1}:lock", ttl=10) as new:
                assert new > old
                assert await stock.deduct(2, id="order-2", fence=new) == Deducted(7)
            with pytest.raises(StaleToken) as info:
                await stock.deduct(1, id="order-3", fence=old)
            assert (info.value.token, info.value.highest) == (old, new)
            assert await stock.get() == 7
        finally:
            await ac.aclose()

    asyncio.run(main())


# ---- defects found by review, fixed (each test failed before its fix) ----------------------


def test_async_check_after_a_wait_longer_than_the_ttl(server: Server, r: redis.Redis) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        await c.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
        lock = Lock(c, KEY, ttl=1.0, wait=10)
        task = asyncio.ensure_future(lock.acquire())
        await until("queued", lambda: _eq(waiters(c), 1))
        await asyncio.sleep(1.2)  # the wait lasts longer than the TTL: the case under test
        await c.execute_command("LOCK.RELEASE", KEY, "holder")
        token = tok(await asyncio.wait_for(task, 10))
        s = await status(c)
        assert s is not None and s["token"] == token and s["ttl"] > 0  # the server says: held
        assert lock.check() == token
        await lock.release()

    run(server, body)


def test_async_cluster_wait_follows_ask_during_a_slot_migration(
    cluster: Any, rc: RedisCluster
) -> None:
    key = "{migrating}:lock"
    slot = rc.keyslot(key)
    src = cluster.node_for_slot(slot)
    dst = next(n for n in cluster.nodes if n is not src)

    async def main() -> None:
        ac = _acluster(cluster)
        try:
            # Without WAIT the call goes through the cluster client, which follows the ASK.
            assert isinstance(await Lock(ac, key + "-plain", ttl=10).acquire(), int)
            assert isinstance(await Lock(ac, key, ttl=10, wait=1.0).acquire(), int)
        finally:
            await ac.aclose()

    with src.client(decode_responses=True) as s, dst.client(decode_responses=True) as d:
        src_id, dst_id = s.execute_command("CLUSTER", "MYID"), d.execute_command("CLUSTER", "MYID")
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        try:
            asyncio.run(main())
        finally:
            for c in (s, d):
                c.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


def test_async_wait_lost_raises_lock_not_acquired_on_release(
    server: Server, r: redis.Redis
) -> None:
    async def body(c: redis.asyncio.Redis) -> None:
        lock = Lock(c, KEY, ttl=30)
        with pytest.raises(LockNotAcquired):
            await asyncio.wait_for(lock.wait_lost(), 10)  # not held
        await lock.acquire()
        waiter = asyncio.ensure_future(lock.wait_lost())
        await asyncio.sleep(0)  # it runs up to its wait (it awaits nothing before)
        assert not waiter.done()
        await lock.release()
        done, _ = await asyncio.wait({waiter}, timeout=10)
        assert waiter in done, "wait_lost() still waiting after release()"
        assert isinstance(waiter.exception(), LockNotAcquired), repr(waiter.exception())
        assert not lock.lost

    run(server, body)
