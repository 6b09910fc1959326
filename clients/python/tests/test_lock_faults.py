"""redis_fence.Lock and redis_fence.asyncio.Lock against servers that misbehave: a reply that
comes late (``DEBUG SLEEP``), a server that answers ``BUSY`` (a Lua busy loop), a cluster master
that stops answering (SIGSTOP), a slot that moved to another master (``MOVED``).

Every fault is started before the call under test and ordered by the server itself: the
``DEBUG SLEEP`` goes out on a connection already open, so the server (which reads its clients in
the order their data came, epoll being first in, first out) sleeps before it reads anything sent
after it. Tests wait for events (the sleep's reply, a ``BUSY`` answer, a refreshed TTL); the
only sleeps are the spans of the faults themselves. Bounds of the contract (``io_timeout``
per step) are asserted with margins of seconds.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from _servers import Cluster, Server, raw_client
from conftest import ServerFactory
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import NodesManager as AsyncNodesManager
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.cluster import NodesManager as SyncNodesManager
from test_async_lock import awaiting_in, until
from test_async_lock import run as run_async
from test_async_lock import status as astatus
from test_lock import LostRecorder, cmdstat, held, raw_status, tok, wait_until

import redis_fence.asyncio
from redis_fence import Lock

KEY = "test:flock"
NETWORK = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


# ---- faults ------------------------------------------------------------------------------------


def debug_server(server_factory: ServerFactory, *extra: str) -> Server:
    return server_factory("--enable-debug-command", "yes", *extra)


class DebugSleep:
    """``DEBUG SLEEP seconds`` on a raw connection of its own, opened (and answered) first, so
    that the server sleeps before it reads anything sent after the constructor returns.
    ``wait()`` returns once the server has answered it: it runs again."""

    def __init__(self, server: Server, seconds: float) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=60)
        self.sock.sendall(b"PING\r\n")
        assert self._line() == b"+PONG"
        self.sock.sendall(f"DEBUG SLEEP {seconds}\r\n".encode())

    def _line(self) -> bytes:
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = self.sock.recv(1)
            assert chunk, "the server closed the connection"
            buf += chunk
        return buf[:-2]

    def wait(self) -> None:
        try:
            assert self._line() == b"+OK"
        finally:
            self.sock.close()


class BusyScript:
    """A Lua busy loop (``EVAL "while true do end" 0``) in a thread of its own: past
    ``busy-reply-threshold`` every other command is answered ``BUSY`` until ``kill()`` (``SCRIPT
    KILL``)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with raw_client(self.server.host, self.server.port, socket_timeout=120) as c:
            try:
                c.execute_command("EVAL", "while true do end", 0)
            except BaseException as e:
                self.error = e

    def _answers_busy(self) -> bool:
        with raw_client(self.server.host, self.server.port) as c:
            try:
                c.execute_command("PING")
            except redis.exceptions.ResponseError as e:
                return str(e).startswith("BUSY")
        return False

    def wait_busy(self) -> None:
        wait_until("the server answering BUSY", self._answers_busy)

    def kill(self) -> None:
        with raw_client(self.server.host, self.server.port) as c:
            c.execute_command("SCRIPT", "KILL")
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert self.error is not None and "killed" in str(self.error).lower(), self.error


# ---- a reply that comes late: acquire (no ghost grant), release (sent again) ------------------


def test_acquire_whose_reply_is_late_cancelled_task_leaves_no_grant(
    server_factory: ServerFactory,
) -> None:
    """A task cancelled while its LOCK.ACQUIRE waits for the reply of a sleeping server: the
    grant the server makes once it wakes is released (the clean-up outlives the cancellation)."""
    s = debug_server(server_factory)
    acquires = cmdstat(s, "LOCK.ACQUIRE")[0]

    async def body(c: redis.asyncio.Redis) -> None:
        lock = redis_fence.asyncio.Lock(c, KEY, owner="cancelled", ttl=60, io_timeout=30)
        assert await lock.status() is None  # its connection is open: the acquire goes out now
        sleep = DebugSleep(s, 2)
        task = asyncio.ensure_future(lock.acquire())

        async def sent() -> bool:
            return awaiting_in(task, {"read_response"})

        await until("LOCK.ACQUIRE sent, its reply awaited", sent)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=30)
        assert task in done and task.cancelled(), repr(task)
        assert lock.token is None and not lock.held
        await asyncio.get_running_loop().run_in_executor(None, sleep.wait)
        await until("the late grant released", lambda: _none(astatus(c, KEY)), timeout=10)

    run_async(s, body)
    # The server ran the acquire after the task gave up on it: a grant was made, then freed.
    assert cmdstat(s, "LOCK.ACQUIRE")[0] == acquires + 1


async def _none(aw: Any) -> bool:
    return (await aw) is None


def test_release_whose_first_reply_is_late_is_sent_again(server_factory: ServerFactory) -> None:
    """The first LOCK.RELEASE times out (the server sleeps longer than io_timeout) but ran; the
    resend finds the grant gone while the lease still runs: a release, not a loss."""
    s = debug_server(server_factory)
    io, nap = 2.0, 3.0  # the first reply is late by 1 s; the resend is answered 1 s early
    client = s.client()
    try:
        lost = LostRecorder()
        lock = Lock(client, KEY, owner="slow", ttl=60, io_timeout=io, on_lost=lost)
        tok(lock.acquire())
        releases = cmdstat(s, "LOCK.RELEASE")[0]
        sleep = DebugSleep(s, nap)
        started = time.monotonic()
        lock.release()  # no LockLost
        elapsed = time.monotonic() - started
        sleep.wait()
        assert lock.token is None and not lock.lost and lost.calls == []
        assert raw_status(client, KEY) is None
        assert cmdstat(s, "LOCK.RELEASE")[0] - releases == 2, "not sent exactly twice"
        assert elapsed < 2 * io + 2.0, f"release took {elapsed:.2f} s"
    finally:
        client.close()


def test_async_release_whose_first_reply_is_late_is_sent_again(
    server_factory: ServerFactory,
) -> None:
    s = debug_server(server_factory)
    io, nap = 2.0, 3.0
    releases: list[int] = []
    lost = LostRecorder()

    async def body(c: redis.asyncio.Redis) -> None:
        lock = redis_fence.asyncio.Lock(c, KEY, owner="slow", ttl=60, io_timeout=io, on_lost=lost)
        tok(await lock.acquire())
        releases.append(cmdstat(s, "LOCK.RELEASE")[0])
        sleep = DebugSleep(s, nap)
        started = time.monotonic()
        await lock.release()  # no LockLost
        elapsed = time.monotonic() - started
        await asyncio.get_running_loop().run_in_executor(None, sleep.wait)
        assert lock.token is None and not lock.lost and lost.calls == []
        assert await astatus(c, KEY) is None
        assert elapsed < 2 * io + 2.0, f"release took {elapsed:.2f} s"

    run_async(s, body)
    assert cmdstat(s, "LOCK.RELEASE")[0] - releases[0] == 2, "not sent exactly twice"


# ---- BUSY: the watchdog waits it out -------------------------------------------------------------


BUSY_SPAN = 1.5  # seconds of BUSY replies: several watchdog intervals
TTL = 5.0  # outlives the busy span with seconds to spare


def test_watchdog_rides_out_busy_replies(server_factory: ServerFactory) -> None:
    s = server_factory("--busy-reply-threshold", "100")
    client = s.client()
    try:
        lost = LostRecorder()
        lock = Lock(client, KEY, ttl=TTL, watchdog=10_000, watchdog_interval=0.2, on_lost=lost)
        token = tok(lock.acquire())
        renewals = cmdstat(s, "LOCK.RENEW")
        busy = BusyScript(s)
        try:
            busy.wait_busy()
            time.sleep(BUSY_SPAN)  # the span of the fault itself
        finally:
            busy.kill()
        # The renewals refused BUSY were tried again; the first after the script renews.
        assert cmdstat(s, "LOCK.RENEW")[1] > renewals[1], "no renewal was answered BUSY"
        wait_until(
            "a renewal after the busy span", lambda: held(client, KEY)["ttl"] > TTL * 1000 - 600
        )
        st = held(client, KEY)
        assert (st["owner"], st["token"]) == (lock.owner, token)
        assert lost.calls == [] and not lock.lost and lock.check() == token
        lock.release()
        assert lost.calls == [] and raw_status(client, KEY) is None
    finally:
        client.close()


def test_async_watchdog_rides_out_busy_replies(server_factory: ServerFactory) -> None:
    s = server_factory("--busy-reply-threshold", "100")
    lost = LostRecorder()
    before: list[tuple[int, int]] = []

    async def body(c: redis.asyncio.Redis) -> None:
        lock = redis_fence.asyncio.Lock(
            c, KEY, ttl=TTL, watchdog=10_000, watchdog_interval=0.2, on_lost=lost
        )
        token = tok(await lock.acquire())
        before.append(cmdstat(s, "LOCK.RENEW"))
        loop = asyncio.get_running_loop()
        busy = BusyScript(s)
        try:
            await loop.run_in_executor(None, busy.wait_busy)
            await asyncio.sleep(BUSY_SPAN)  # the span of the fault itself
        finally:
            await loop.run_in_executor(None, busy.kill)
        assert cmdstat(s, "LOCK.RENEW")[1] > before[0][1], "no renewal was answered BUSY"

        async def renewed() -> bool:
            st = await astatus(c, KEY)
            return st is not None and st["ttl"] > TTL * 1000 - 600

        await until("a renewal after the busy span", renewed)
        st = await astatus(c, KEY)
        assert st is not None and (st["owner"], st["token"]) == (lock.owner, token)
        assert lost.calls == [] and not lock.lost and lock.check() == token
        await lock.release()
        assert lost.calls == [] and await astatus(c, KEY) is None

    run_async(s, body)


# ---- Redis Cluster: a stopped master, a moved slot --------------------------------------------


# For a cluster whose master is stopped on purpose: no other node takes it for failed meanwhile
# (the last --cluster-node-timeout given wins).
PATIENT = ("--cluster-node-timeout", "60000")


def cluster_client(cluster: Cluster) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes()], socket_timeout=30
    )


def async_cluster_client(cluster: Cluster) -> AsyncRedisCluster:
    return AsyncRedisCluster(
        startup_nodes=[AsyncClusterNode(h, p) for h, p in cluster.startup_nodes()],
        socket_timeout=30,
    )


def owner_of(cluster: Cluster, key: str) -> Server:
    """The master serving ``key`` now (asked, not taken from the starting layout)."""
    node = cluster.nodes[0]
    with raw_client(node.host, node.port) as c:
        slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        for first, last, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if int(first) <= slot <= int(last):
                port = int(master[1])
                return next(n for n in cluster.nodes if n.port == port)
    raise AssertionError(f"no master serves {key}")


def key_on_another_master(cluster: Cluster, than: Server, tag: str) -> str:
    for i in range(1000):
        key = f"{{{tag}-{i}}}:lock"
        if owner_of(cluster, key) is not than:
            return key
    raise AssertionError("no key on another master")


def node_id(node: Server) -> str:
    with raw_client(node.host, node.port, decode_responses=True) as c:
        return str(c.execute_command("CLUSTER", "MYID"))


def move_slot(cluster: Cluster, key: str, dst: Server) -> None:
    """Moves the slot of ``key`` (and every key in it) to ``dst`` for good: IMPORTING /
    MIGRATING, MIGRATE of the keys, then ``CLUSTER SETSLOT … NODE`` on every node."""
    src = owner_of(cluster, key)
    assert src is not dst
    with raw_client(src.host, src.port) as s, raw_client(dst.host, dst.port) as d:
        slot = int(s.execute_command("CLUSTER", "KEYSLOT", key))
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(src))
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(dst))
        keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        assert keys, "nothing to migrate"
        assert s.execute_command("MIGRATE", dst.host, dst.port, "", 0, 10_000, "KEYS", *keys) in (
            b"OK",
            "OK",
        )
    for node in [dst, src, *(n for n in cluster.nodes if n not in (src, dst))]:
        with raw_client(node.host, node.port) as c:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(dst))
    assert owner_of(cluster, key) is dst


@pytest.fixture(scope="module")
def moving_cluster() -> Iterator[Cluster]:
    """A cluster of this module's own, whose slots the tests move (each its own slot)."""
    c = Cluster.start(3)
    yield c
    c.close()


def count_initialize(monkeypatch: pytest.MonkeyPatch, cls: Any) -> list[Any]:
    """Every call of ``cls.initialize`` from now on (``cls``: the ``NodesManager`` of redis-py's
    sync or asyncio cluster client, where a refresh of the slot table happens), by instance."""
    calls: list[Any] = []
    original = cls.initialize

    if asyncio.iscoroutinefunction(original):

        async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(self)
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "initialize", counted_async)
    else:

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(self)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "initialize", counted)
    return calls


@pytest.mark.cluster
def test_cluster_renew_and_release_on_a_stopped_master_are_bounded(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = server_factory.cluster(extra_args=PATIENT)
    rc = cluster_client(c)
    io = 0.5
    try:
        key = "{stopped}:lock"
        master = owner_of(c, key)
        lost = LostRecorder()
        lock = Lock(
            rc, key, ttl=60, watchdog=10_000, watchdog_interval=0.1, io_timeout=io, on_lost=lost
        )
        token = tok(lock.acquire())
        elsewhere = Lock(rc, key_on_another_master(c, master, "live"), ttl=60, io_timeout=io)
        inits = count_initialize(monkeypatch, SyncNodesManager)
        master.sigstop()
        try:
            started = time.monotonic()
            with pytest.raises(NETWORK):
                lock.renew()
            renew_took = time.monotonic() - started
            assert lock.token == token, "a renewal cut off is no loss"
            # A key on a live master is not held up by the stopped one.
            tok(elsewhere.acquire())
            elsewhere.release()
            started = time.monotonic()
            with pytest.raises(NETWORK):
                lock.release()
            release_took = time.monotonic() - started
        finally:
            master.sigcont()
        assert renew_took < 3 * io + 2.0, f"renew took {renew_took:.2f} s"
        assert release_took < 3 * io + 2.0, f"release took {release_took:.2f} s"
        assert inits == [], "the lock refreshed the slot table (nodes_manager.initialize)"
        assert lost.calls == [] and lock.token is None
    finally:
        rc.close()


@pytest.mark.cluster
def test_async_cluster_renew_and_release_on_a_stopped_master_are_bounded(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = server_factory.cluster(extra_args=PATIENT)
    io = 0.5
    key = "{stopped}:lock"
    master = owner_of(c, key)
    other_key = key_on_another_master(c, master, "live")

    async def main() -> None:
        ac = async_cluster_client(c)
        try:
            lost = LostRecorder()
            lock = redis_fence.asyncio.Lock(
                ac, key, ttl=60, watchdog=10_000, watchdog_interval=0.1, io_timeout=io, on_lost=lost
            )
            token = tok(await lock.acquire())
            elsewhere = redis_fence.asyncio.Lock(ac, other_key, ttl=60, io_timeout=io)
            inits = count_initialize(monkeypatch, AsyncNodesManager)
            master.sigstop()
            try:
                started = time.monotonic()
                with pytest.raises(NETWORK):
                    await lock.renew()
                renew_took = time.monotonic() - started
                assert lock.token == token, "a renewal cut off is no loss"
                tok(await elsewhere.acquire())
                await elsewhere.release()
                started = time.monotonic()
                with pytest.raises(NETWORK):
                    await lock.release()
                release_took = time.monotonic() - started
            finally:
                master.sigcont()
            assert renew_took < 3 * io + 2.0, f"renew took {renew_took:.2f} s"
            assert release_took < 3 * io + 2.0, f"release took {release_took:.2f} s"
            assert inits == [], "the lock refreshed the slot table (nodes_manager.initialize)"
            assert lost.calls == [] and lock.token is None
        finally:
            await ac.aclose()

    asyncio.run(main())


def _lock_calls(node: Server) -> dict[str, tuple[int, int]]:
    return {name: cmdstat(node, name) for name in ("LOCK.RENEW", "LOCK.RELEASE")}


@pytest.mark.cluster
def test_cluster_renew_and_release_follow_moved(
    moving_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot moves to another master under two held locks, each on a client whose slot
    table still names the old master: renew() of one and release() of the other are answered
    MOVED there and follow it, without a refresh of the slot table."""
    c = moving_cluster
    one, two = cluster_client(c), cluster_client(c)
    try:
        a_key, b_key = "{moved-sync}:a", "{moved-sync}:b"
        src = owner_of(c, a_key)
        dst = next(n for n in c.nodes if n is not src)
        a, b = Lock(one, a_key, ttl=60), Lock(two, b_key, ttl=60)
        ta, tb = tok(a.acquire()), tok(b.acquire())
        inits = count_initialize(monkeypatch, SyncNodesManager)
        move_slot(c, a_key, dst)
        src_before, dst_before = _lock_calls(src), _lock_calls(dst)
        with raw_client(dst.host, dst.port) as d:
            assert held(d, a_key)["token"] == ta and held(d, b_key)["token"] == tb
            assert a.renew(ttl=30) == ta
            assert 25_000 < held(d, a_key)["ttl"] <= 30_000
            b.release()
            assert raw_status(d, b_key) is None
            a.release()
            assert raw_status(d, a_key) is None
        src_after, dst_after = _lock_calls(src), _lock_calls(dst)
        # Each answered MOVED once by the old master, then run on the new one.
        assert src_after["LOCK.RENEW"][1] - src_before["LOCK.RENEW"][1] == 1
        assert src_after["LOCK.RELEASE"][1] - src_before["LOCK.RELEASE"][1] == 1
        assert dst_after["LOCK.RENEW"][0] - dst_before["LOCK.RENEW"][0] == 1
        assert dst_after["LOCK.RELEASE"][0] - dst_before["LOCK.RELEASE"][0] == 2
        assert inits == [], "the slot table was refreshed"
        # The caller's slot table was told of the move.
        node = one.get_node_from_key(a_key)
        assert node is not None and int(node.port) == dst.port
    finally:
        one.close()
        two.close()


async def _async_moved_scenario(
    c: Cluster, tag: str, one: AsyncRedisCluster, two: AsyncRedisCluster
) -> tuple[Server, Server]:
    a_key, b_key = f"{{{tag}}}:a", f"{{{tag}}}:b"
    src = owner_of(c, a_key)
    dst = next(n for n in c.nodes if n is not src)
    a = redis_fence.asyncio.Lock(one, a_key, ttl=60)
    b = redis_fence.asyncio.Lock(two, b_key, ttl=60)
    ta, tb = tok(await a.acquire()), tok(await b.acquire())
    move_slot(c, a_key, dst)
    with raw_client(dst.host, dst.port) as d:
        assert held(d, a_key)["token"] == ta and held(d, b_key)["token"] == tb
        assert await a.renew(ttl=30) == ta
        assert 25_000 < held(d, a_key)["ttl"] <= 30_000
        await b.release()
        assert raw_status(d, b_key) is None
        await a.release()
        assert raw_status(d, a_key) is None
    return src, dst


@pytest.mark.cluster
def test_async_cluster_renew_and_release_follow_moved(
    moving_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = moving_cluster
    counts: dict[str, Any] = {}

    async def main() -> None:
        one, two = async_cluster_client(c), async_cluster_client(c)
        try:
            await one.initialize()
            await two.initialize()
            inits = count_initialize(monkeypatch, AsyncNodesManager)
            src = owner_of(c, "{moved-async}:a")
            dst = next(n for n in c.nodes if n is not src)
            counts["before"] = (_lock_calls(src), _lock_calls(dst))
            assert await _async_moved_scenario(c, "moved-async", one, two) == (src, dst)
            counts["after"] = (_lock_calls(src), _lock_calls(dst))
            assert inits == [], "the slot table was refreshed"
        finally:
            await one.aclose()
            await two.aclose()

    asyncio.run(main())
    (src_before, dst_before), (src_after, dst_after) = counts["before"], counts["after"]
    assert src_after["LOCK.RENEW"][1] - src_before["LOCK.RENEW"][1] == 1
    assert src_after["LOCK.RELEASE"][1] - src_before["LOCK.RELEASE"][1] == 1
    assert dst_after["LOCK.RENEW"][0] - dst_before["LOCK.RENEW"][0] == 1
    assert dst_after["LOCK.RELEASE"][0] - dst_before["LOCK.RELEASE"][0] == 2


# ---- defects found by review, fixed (each test failed before its fix) ----------------------


def test_acquire_whose_reply_is_late_leaves_no_grant(server_factory: ServerFactory) -> None:
    s = debug_server(server_factory)
    io = 0.5
    client = s.client()
    try:
        lock = Lock(client, KEY, owner="late", ttl=60, io_timeout=io)
        assert lock.status() is None  # its connection is open: the acquire goes out at once
        acquires = cmdstat(s, "LOCK.ACQUIRE")[0]
        sleep = DebugSleep(s, 2)
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            lock.acquire()
        elapsed = time.monotonic() - started
        assert lock.token is None and not lock.held
        assert elapsed < 3 * io + 2.0, f"acquire took {elapsed:.2f} s"
        sleep.wait()
        # The server ran the acquire once awake (a grant for our owner), then the release.
        wait_until("the late grant released", lambda: raw_status(client, KEY) is None, timeout=3)
        assert cmdstat(s, "LOCK.ACQUIRE")[0] == acquires + 1
    finally:
        client.close()


def test_async_acquire_whose_reply_is_late_leaves_no_grant(server_factory: ServerFactory) -> None:
    s = debug_server(server_factory)
    io = 0.5
    acquires = cmdstat(s, "LOCK.ACQUIRE")[0]

    async def body(c: redis.asyncio.Redis) -> None:
        lock = redis_fence.asyncio.Lock(c, KEY, owner="late", ttl=60, io_timeout=io)
        assert await lock.status() is None
        sleep = DebugSleep(s, 2)
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            await lock.acquire()
        elapsed = time.monotonic() - started
        assert lock.token is None and not lock.held
        assert elapsed < 3 * io + 2.0, f"acquire took {elapsed:.2f} s"
        await asyncio.get_running_loop().run_in_executor(None, sleep.wait)
        await until("the late grant released", lambda: _none(astatus(c, KEY)), timeout=3)

    run_async(s, body)
    assert cmdstat(s, "LOCK.ACQUIRE")[0] == acquires + 1


@pytest.mark.cluster
def test_async_cluster_moved_is_told_to_the_callers_slot_table(moving_cluster: Cluster) -> None:
    """As the sync lock does (test_cluster_renew_and_release_follow_moved), the asyncio lock
    tells the caller's slot table of a MOVED it followed."""
    c = moving_cluster
    ports: list[int] = []

    async def main() -> None:
        one, two = async_cluster_client(c), async_cluster_client(c)
        try:
            _, dst = await _async_moved_scenario(c, "moved-table", one, two)
            node = one.get_node_from_key("{moved-table}:a")
            ports.extend([dst.port, -1 if node is None else int(node.port)])
        finally:
            await one.aclose()
            await two.aclose()

    asyncio.run(main())
    assert ports[0] == ports[1], "the caller's slot table still names the old master"


@pytest.mark.cluster
def test_async_cluster_lock_never_refreshes_the_slot_table(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = server_factory.cluster(extra_args=PATIENT)
    key = "{stopped}:lock"
    master = owner_of(c, key)
    live_key = key_on_another_master(c, master, "live")
    inits: list[Any] = []

    async def main() -> None:
        ac = AsyncRedisCluster(
            startup_nodes=[AsyncClusterNode(h, p) for h, p in c.startup_nodes()],
            socket_timeout=0.3,
            retry=AsyncRetry(NoBackoff(), 0),
        )
        try:
            lock = redis_fence.asyncio.Lock(ac, live_key, ttl=60, io_timeout=0.5)
            token = tok(await lock.acquire())
            calls = count_initialize(monkeypatch, AsyncNodesManager)
            master.sigstop()
            try:
                with pytest.raises(NETWORK):
                    await ac.get(key)  # the caller's own command: cut off, its client flagged
                assert await lock.renew() == token  # a live master: no refresh needed
                await lock.release()
            finally:
                master.sigcont()
            inits.extend(calls)
        finally:
            await ac.aclose()

    asyncio.run(main())
    assert inits == [], "the lock refreshed the slot table (NodesManager.initialize)"
