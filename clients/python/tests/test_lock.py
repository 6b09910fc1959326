"""redis_fence.Lock (sync) against real servers: the README's LOCK.* contract as the class
exposes it (tokens, TOKEN on renew/release, WAIT, abandoned waits, the watchdog, bounded I/O)
and the same on Redis Cluster.

Nothing here sleeps to let the work finish: tests wait for events (a server-side waiter count,
a callback, a MONITOR line), and sleep only where the passing of time is itself the point (a
lease kept alive past several TTLs, "nothing more happens after release").
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from _servers import Server
from conftest import ServerFactory
from redis.cluster import ClusterNode, RedisCluster

import redis_fence
from redis_fence import Deducted, Lock, LockInUse, LockLost, LockNotAcquired, StaleToken, Stock

KEY = "test:lock"


# ---- helpers ---------------------------------------------------------------------------------


def raw_status(client: Any, key: str = KEY) -> dict[str, Any] | None:
    """LOCK.STATUS read without the package: {'owner': str, 'token', 'ttl', 'waiters'}."""
    reply = client.execute_command("LOCK.STATUS", key)
    if reply is None:
        return None
    if isinstance(reply, dict):
        items = list(reply.items())
    else:
        items = [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
    out = {}
    for k, v in items:
        k = k.decode() if isinstance(k, bytes) else k
        out[k] = v.decode() if isinstance(v, bytes) else v
    return out


def held(client: Any, key: str = KEY) -> dict[str, Any]:
    """LOCK.STATUS of a lock that must be held."""
    s = raw_status(client, key)
    assert s is not None, f"{key} is free"
    return s


def tok(token: int | None) -> int:
    """A token that must have been granted."""
    assert isinstance(token, int) and token > 0, token
    return token


def wait_until(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Polls ``check`` until it returns something truthy (returned) or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
        time.sleep(0.005)


def waiters(client: Any, key: str = KEY) -> int:
    s = raw_status(client, key)
    return 0 if s is None else s["waiters"]


def spawn(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    """Runs ``fn`` in a daemon thread (a stuck waiter never keeps the test process alive)."""
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as e:
            fut.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return fut


class Monitor:
    """MONITOR on a raw socket: the commands the server ran, as lists of str."""

    _ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        self.lines: list[list[str]] = []
        self._cv = threading.Condition()
        buf = b""
        while b"\r\n" not in buf:
            buf += self.sock.recv(4096)
        assert buf.startswith(b"+OK"), buf
        self._rest = buf.split(b"\r\n", 1)[1]
        self.sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._n = 0

    def _read(self) -> None:
        buf = self._rest
        while True:
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                args = [m.group(1) for m in self._ARG.finditer(line.decode(errors="replace"))]
                with self._cv:
                    self.lines.append(args)
                    self._cv.notify_all()
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data

    def sync(self, client: Any) -> None:
        """Returns once every command ``client``'s server ran before now is in ``lines``."""
        self._n += 1
        mark = f"monitor-mark-{id(self)}-{self._n}"
        client.execute_command("ECHO", mark)
        with self._cv:
            ok = self._cv.wait_for(lambda: any(mark in a for a in self.lines), timeout=10)
        assert ok, "MONITOR did not show the mark"

    def commands(self, name: str, key: str = KEY) -> list[list[str]]:
        with self._cv:
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


def cmdstat(server: Server, command: str) -> tuple[int, int]:
    """``(calls, rejected_calls)`` of ``command`` (e.g. ``LOCK.RELEASE``) in ``server``'s
    ``INFO commandstats`` (a call refused before it ran, by ``MOVED`` or ``BUSY``, is a
    rejected call); (0, 0) when it never ran."""
    value = server.info("commandstats").get(f"cmdstat_{command}")
    if value is None:
        return 0, 0
    fields = dict(part.split("=", 1) for part in value.split(","))
    return int(fields["calls"]), int(fields.get("rejected_calls", "0"))


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("redis-fence watchdog")]


class LostRecorder:
    """An ``on_lost`` callback: every call recorded, and an event for the first."""

    def __init__(self) -> None:
        self.calls: list[LockLost] = []
        self.at: float | None = None
        self.event = threading.Event()

    def __call__(self, lost: LockLost) -> None:
        self.calls.append(lost)
        if self.at is None:
            self.at = time.monotonic()
        self.event.set()

    def wait(self, timeout: float) -> LockLost:
        assert self.event.wait(timeout), f"on_lost not called within {timeout} s"
        return self.calls[0]


# ---- constructor ---------------------------------------------------------------------------


def test_constructor_rejects_bad_durations(r: redis.Redis) -> None:
    for ttl in (0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            Lock(r, KEY, ttl=ttl)
    for wait in (0, 0.0, -1, -0.001, math.nan, -math.inf):
        with pytest.raises(ValueError):
            Lock(r, KEY, wait=wait)
    for watchdog in (-1, 1.5, True):
        with pytest.raises(ValueError):
            Lock(r, KEY, watchdog=watchdog)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Lock(r, KEY, ttl=1, watchdog=3, watchdog_interval=1)
    with pytest.raises(ValueError):
        Lock(r, KEY, ttl=1, watchdog=3, watchdog_interval=0)
    with pytest.raises(ValueError):
        Lock(r, KEY, io_timeout=0)
    with pytest.raises(ValueError):
        Lock(r, KEY, owner="")
    # Nothing was sent by any of them.
    assert r.execute_command("DBSIZE") == 0


def test_constructor_defaults(r: redis.Redis) -> None:
    a, b = Lock(r, KEY), Lock(r, KEY)
    assert a.owner and b.owner and a.owner != b.owner
    assert a.token is None and not a.held and not a.lost and a.lost_reason is None
    lock = Lock(r, KEY, ttl=0.5, wait=2.5, watchdog=4)
    assert lock.ttl == 0.5 and lock.wait == 2.5 and lock.watchdog == 4
    assert lock.watchdog_interval == pytest.approx(0.5 / 3)
    with pytest.raises(LockNotAcquired):
        lock.check()
    with pytest.raises(LockNotAcquired):
        lock.release()
    with pytest.raises(LockNotAcquired):
        lock.renew()


def test_arguments_on_the_wire(r: redis.Redis, monitor: Monitor) -> None:
    """ttl/wait in float seconds become ms (rounded up); wait=None sends no WAIT, math.inf
    WAIT 0; renew and release carry TOKEN."""
    plain = Lock(r, KEY, owner="o-plain", ttl=0.25)
    t = tok(plain.acquire())
    assert isinstance(t, int)
    plain.renew()
    plain.renew(ttl=1.0005)
    plain.release()
    forever = Lock(r, KEY, owner="o-inf", ttl=1.5, wait=math.inf)
    t2 = tok(forever.acquire())
    forever.release()
    tiny = Lock(r, KEY, owner="o-tiny", ttl=0.0001, wait=0.0101)
    tiny.acquire()
    monitor.sync(r)
    acquires = monitor.commands("LOCK.ACQUIRE")
    assert acquires == [
        ["LOCK.ACQUIRE", KEY, "o-plain", "250"],
        ["LOCK.ACQUIRE", KEY, "o-inf", "1500", "WAIT", "0"],
        ["LOCK.ACQUIRE", KEY, "o-tiny", "1", "WAIT", "11"],
    ]
    assert monitor.commands("LOCK.RENEW") == [
        ["LOCK.RENEW", KEY, "o-plain", "250", "TOKEN", str(t)],
        ["LOCK.RENEW", KEY, "o-plain", "1001", "TOKEN", str(t)],
    ]
    assert monitor.commands("LOCK.RELEASE") == [
        ["LOCK.RELEASE", KEY, "o-plain", "TOKEN", str(t)],
        ["LOCK.RELEASE", KEY, "o-inf", "TOKEN", str(t2)],
    ]


# ---- with / acquire / release / renew ------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_with_returns_the_token_and_releases(server: Server, r: redis.Redis, protocol: int) -> None:
    client = server.client(protocol=protocol, decode_responses=(protocol == 2))
    try:
        lock = Lock(client, KEY, ttl=10)
        with lock as token:
            assert isinstance(token, int) and token > 0
            assert token == lock.token == lock.check()
            assert lock.held
            s = raw_status(r)
            assert s is not None and s["owner"] == lock.owner and s["token"] == token
            assert 9000 < s["ttl"] <= 10000
            st = lock.status()
            assert st is not None and (st.owner, st.token, st.waiters) == (lock.owner, token, 0)
        assert raw_status(r) is None
        assert lock.status() is None
        assert not lock.held
    finally:
        client.close()


def test_with_releases_when_the_block_raises(r: redis.Redis) -> None:
    class Boom(Exception):
        pass

    lock = Lock(r, KEY, ttl=10)
    with pytest.raises(Boom), lock as token:
        assert held(r)["token"] == token
        raise Boom()
    assert raw_status(r) is None


def test_with_held_by_another_owner_raises_lock_not_acquired(r: redis.Redis) -> None:
    other = r.execute_command("LOCK.ACQUIRE", KEY, "someone-else", 30000)
    ran = []
    with pytest.raises(LockNotAcquired) as info, Lock(r, KEY, ttl=10):
        ran.append(1)
    assert isinstance(info.value, redis.exceptions.LockError)
    assert isinstance(info.value, redis.exceptions.RedisError)
    assert ran == []
    s = raw_status(r)
    assert s is not None and s["owner"] == "someone-else" and s["token"] == other
    # With a wait that runs out: the same.
    with pytest.raises(LockNotAcquired), Lock(r, KEY, ttl=10, wait=0.05):
        ran.append(2)
    assert ran == []
    assert held(r)["waiters"] == 0


def test_acquire_returns_token_or_none_and_release_frees(r: redis.Redis) -> None:
    a, b = Lock(r, KEY, ttl=10), Lock(r, KEY, ttl=10)
    t1 = tok(a.acquire())
    assert isinstance(t1, int)
    with pytest.raises(LockInUse) as info:
        a.acquire()  # already held by this handle: one Lock object per holder
    assert isinstance(info.value, redis.exceptions.LockError)
    assert isinstance(info.value, redis_fence.FenceError)
    assert a.token == t1 and held(r)["token"] == t1
    assert b.acquire() is None
    assert b.token is None and not b.held
    a.release()
    assert raw_status(r) is None
    t2 = tok(b.acquire())
    assert isinstance(t2, int) and t2 > t1
    assert held(r)["owner"] == b.owner
    b.release()
    assert raw_status(r) is None


def test_renew_resets_the_ttl(r: redis.Redis) -> None:
    lock = Lock(r, KEY, ttl=10)
    token = tok(lock.acquire())
    assert lock.renew(ttl=60) == token
    assert 59000 < held(r)["ttl"] <= 60000
    assert lock.renew() == token
    assert 9000 < held(r)["ttl"] <= 10000
    lock.release()


def _wait_gone(r: redis.Redis, key: str = KEY) -> None:
    wait_until("the lock expiring", lambda: raw_status(r, key) is None, timeout=10)


def test_renew_of_an_ended_grant_raises_lock_lost(r: redis.Redis) -> None:
    lock = Lock(r, KEY, ttl=0.05)
    token = tok(lock.acquire())
    _wait_gone(r)
    with pytest.raises(LockLost) as info:
        lock.renew()
    lost = info.value
    assert isinstance(lost, redis.exceptions.LockNotOwnedError)
    assert isinstance(lost, redis.exceptions.LockError)
    assert lost.token == token and lost.key == KEY and lost.reason
    assert lock.lost and lock.lost_reason == lost.reason
    with pytest.raises(LockLost):
        lock.check()
    with pytest.raises(LockLost):
        lock.release()
    assert raw_status(r) is None  # renew never brings an expired lock back


def test_release_of_an_ended_grant_raises_lock_lost(r: redis.Redis) -> None:
    lock = Lock(r, KEY, ttl=0.05)
    token = tok(lock.acquire())
    _wait_gone(r)
    with pytest.raises(LockLost) as info:
        lock.release()
    assert info.value.token == token
    # A grant that changed hands: released by someone else, taken by another owner.
    lock2 = Lock(r, KEY, ttl=10)
    lock2.acquire()
    r.execute_command("DEL", KEY)
    other = r.execute_command("LOCK.ACQUIRE", KEY, "other", 30000)
    with pytest.raises(LockLost):
        lock2.release()
    assert held(r)["token"] == other


def test_check_raises_once_the_lease_ran_out(r: redis.Redis) -> None:
    lost = LostRecorder()
    lock = Lock(r, KEY, ttl=0.05, on_lost=lost)
    token = tok(lock.acquire())
    assert lock.check() == token
    _wait_gone(r)
    with pytest.raises(LockLost):
        lock.check()
    with pytest.raises(LockLost):
        lock.check()
    assert len(lost.calls) == 1 and lost.calls[0].token == token


def test_stale_handle_never_touches_a_newer_grant_of_the_same_owner(r: redis.Redis) -> None:
    stale = Lock(r, KEY, owner="worker-7", ttl=0.05)
    t1 = tok(stale.acquire())
    _wait_gone(r)
    fresh = Lock(r, KEY, owner="worker-7", ttl=30)
    t2 = tok(fresh.acquire())
    assert t2 > t1
    with pytest.raises(LockLost):
        stale.renew()
    s = raw_status(r)
    assert s is not None and (s["owner"], s["token"]) == ("worker-7", t2)
    assert s["ttl"] > 29000, "the stale renew touched the newer grant's TTL"
    with pytest.raises(LockLost):
        stale.release()
    s = raw_status(r)
    assert s is not None and (s["owner"], s["token"]) == ("worker-7", t2)
    # The stale handle is free to take the lock again once the fresh one lets go.
    fresh.release()
    assert raw_status(r) is None


# ---- one Lock object per holder ---------------------------------------------------------------


def test_threads_sharing_one_lock_object_get_one_grant(server: Server, r: redis.Redis) -> None:
    """Threads racing on one Lock object: one of them gets the grant, every other one gets
    LockInUse (none a copy of the token), round after round; only the winner's LOCK.ACQUIRE is
    sent."""
    lock = Lock(r, KEY, ttl=30)
    threads, rounds = 8, 10
    acquires = cmdstat(server, "LOCK.ACQUIRE")[0]
    tokens: list[int] = []
    for _ in range(rounds):
        barrier = threading.Barrier(threads)

        def attempt(barrier: threading.Barrier = barrier) -> object:
            barrier.wait(30)
            try:
                return lock.acquire()
            except LockInUse as e:
                return e

        results = [f.result(timeout=30) for f in [spawn(attempt) for _ in range(threads)]]
        granted = [x for x in results if isinstance(x, int)]
        assert len(granted) == 1, results
        refused = [x for x in results if not isinstance(x, int)]
        assert len(refused) == threads - 1 and all(isinstance(x, LockInUse) for x in refused)
        s = held(r)
        assert (s["owner"], s["token"]) == (lock.owner, granted[0]) and lock.token == granted[0]
        tokens.append(granted[0])
        lock.release()
        assert raw_status(r) is None
    assert tokens == sorted(set(tokens)), f"a token was handed out twice: {tokens}"
    assert cmdstat(server, "LOCK.ACQUIRE")[0] - acquires == rounds


def test_acquire_while_another_thread_waits_in_acquire(r: redis.Redis) -> None:
    r.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
    lock = Lock(r, KEY, ttl=30, wait=30)
    fut = spawn(lock.acquire)
    wait_until("the first acquire() queued", lambda: waiters(r) == 1)
    for _ in range(2):
        with pytest.raises(LockInUse):
            lock.acquire()
    assert waiters(r) == 1 and not fut.done(), "the refused acquire() reached the server"
    assert r.execute_command("LOCK.RELEASE", KEY, "holder") == 1
    token = tok(fut.result(timeout=10))
    with pytest.raises(LockInUse):
        lock.acquire()  # now held
    assert held(r)["token"] == token and lock.token == token
    lock.release()
    # Released (or found lost), the object takes the lock again.
    again = tok(lock.acquire())
    assert again > token
    lock.release()
    short = Lock(r, KEY, ttl=0.05)
    first = tok(short.acquire())
    _wait_gone(r)
    with pytest.raises(LockLost):
        short.check()
    assert tok(short.acquire()) > first
    short.release()


# ---- WAIT ----------------------------------------------------------------------------------


def test_wait_granted_on_release_first_come_first_served(r: redis.Redis) -> None:
    holder = Lock(r, KEY, owner="holder", ttl=30)
    t0 = tok(holder.acquire())
    w1 = Lock(r, KEY, owner="w1", ttl=30, wait=20)
    w2 = Lock(r, KEY, owner="w2", ttl=30, wait=20)
    f1 = spawn(w1.acquire)
    wait_until("w1 queued", lambda: waiters(r) == 1)
    f2 = spawn(w2.acquire)
    wait_until("w2 queued", lambda: waiters(r) == 2)
    assert not f1.done() and not f2.done()
    holder.release()
    t1 = tok(f1.result(timeout=10))
    assert isinstance(t1, int) and t1 > t0 and w1.token == t1
    s = raw_status(r)
    assert s is not None and (s["owner"], s["token"], s["waiters"]) == ("w1", t1, 1)
    assert not f2.done()
    w1.release()
    t2 = tok(f2.result(timeout=10))
    assert t2 > t1
    s = raw_status(r)
    assert s is not None and (s["owner"], s["waiters"]) == ("w2", 0)
    w2.release()


def test_wait_runs_out(r: redis.Redis) -> None:
    r.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
    lock = Lock(r, KEY, ttl=10, wait=0.4)
    started = time.monotonic()
    assert lock.acquire() is None
    elapsed = time.monotonic() - started
    assert elapsed >= 0.4 - 0.002, f"answered after {elapsed:.3f} s, before the wait"
    assert elapsed < 0.4 + 2.0, f"answered after {elapsed:.3f} s"
    assert lock.token is None
    s = raw_status(r)
    assert s is not None and (s["owner"], s["waiters"]) == ("holder", 0)


def test_wait_inf_waits_until_release(r: redis.Redis) -> None:
    r.execute_command("LOCK.ACQUIRE", KEY, "holder", 60000)
    lock = Lock(r, KEY, ttl=10, wait=math.inf, io_timeout=0.1)
    fut = spawn(lock.acquire)
    wait_until("queued", lambda: waiters(r) == 1)
    # Several io_timeouts pass: a finite read timeout would have given up by now.
    time.sleep(0.5)
    assert not fut.done()
    assert waiters(r) == 1
    assert r.execute_command("LOCK.RELEASE", KEY, "holder") == 1
    token = tok(fut.result(timeout=10))
    assert isinstance(token, int)
    assert held(r)["owner"] == lock.owner
    lock.release()


# ---- abandoned waits -------------------------------------------------------------------------


class Interrupt:
    """Delivers SIGUSR1 to the main thread (blocked in a socket read) once ``when()`` holds;
    the handler runs ``action()`` in the main thread, then raises KeyboardInterrupt there, as
    a Ctrl-C would."""

    def __init__(self, when: Callable[[], bool], action: Callable[[], None] = lambda: None):
        assert threading.current_thread() is threading.main_thread()
        self.when = when
        self.action = action
        self.armed = True
        self.fired = False
        self.error: BaseException | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        if not self.armed:
            return
        self.armed = False
        self.fired = True
        self.action()
        raise KeyboardInterrupt()

    def _watch(self) -> None:
        try:
            wait_until("the waiter queued", self.when)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # type: ignore[arg-type]
        except BaseException as e:
            self.error = e

    def __enter__(self) -> Interrupt:
        self._old = signal.signal(signal.SIGUSR1, self._handler)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.armed = False
        self._thread.join(15)
        signal.signal(signal.SIGUSR1, self._old)
        if self.error is not None:
            raise self.error


def test_abandoned_wait_leaves_no_waiter(r: redis.Redis) -> None:
    r.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
    lock = Lock(r, KEY, owner="quitter", ttl=30, wait=30)
    with Interrupt(lambda: waiters(r) == 1) as interrupt, pytest.raises(KeyboardInterrupt):
        lock.acquire()
    assert interrupt.fired
    assert lock.token is None
    wait_until("the waiter gone", lambda: waiters(r) == 0, timeout=5)
    assert held(r)["owner"] == "holder"
    assert r.execute_command("LOCK.RELEASE", KEY, "holder") == 1
    assert raw_status(r) is None, "the abandoned waiter was granted the lock"


def test_abandoned_wait_releases_a_grant_it_never_read(r: redis.Redis) -> None:
    """The grant reaches the waiter's socket, but the waiter is interrupted before reading it:
    the lock goes on to the next waiter, never stays with the abandoned owner."""
    r.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
    lock = Lock(r, KEY, owner="quitter", ttl=30, wait=30)
    nxt = Lock(r, KEY, owner="next", ttl=30, wait=30)
    seen: list[dict[str, Any] | None] = []
    queued: list[Any] = []

    def when() -> bool:
        if not queued and waiters(r) == 1:
            queued.append(spawn(nxt.acquire))
        return waiters(r) == 2

    def grant_then_interrupt() -> None:
        with redis.Redis(
            host=r.connection_pool.connection_kwargs["host"],
            port=r.connection_pool.connection_kwargs["port"],
            socket_timeout=10,
        ) as ctl:
            assert ctl.execute_command("LOCK.RELEASE", KEY, "holder") == 1
            seen.append(raw_status(ctl))

    with Interrupt(when, grant_then_interrupt) as interrupt, pytest.raises(KeyboardInterrupt):
        lock.acquire()
    assert interrupt.fired
    # The server had granted the lock to the abandoned waiter (the reply was left unread).
    assert seen and seen[0] is not None and seen[0]["owner"] == "quitter", seen
    ghost = seen[0]["token"]
    t_next = tok(queued[0].result(timeout=10))
    assert isinstance(t_next, int) and t_next > ghost
    s = raw_status(r)
    assert s is not None and (s["owner"], s["token"], s["waiters"]) == ("next", t_next, 0)
    assert lock.token is None
    nxt.release()


def test_wait_whose_connection_is_killed_raises_and_leaves_nothing(r: redis.Redis) -> None:
    r.execute_command("LOCK.ACQUIRE", KEY, "holder", 30000)
    lock = Lock(r, KEY, owner="killed", ttl=30, wait=30)
    fut = spawn(lock.acquire)
    wait_until("queued", lambda: waiters(r) == 1)
    ids = [
        c["id"]
        for c in r.client_list()
        if c.get("cmd", "").lower() == "lock.acquire" and "b" in c.get("flags", "")
    ]
    assert len(ids) == 1, r.client_list()
    r.execute_command("CLIENT", "KILL", "ID", ids[0])
    with pytest.raises(redis.exceptions.ConnectionError):
        fut.result(timeout=10)
    wait_until("the waiter gone", lambda: waiters(r) == 0, timeout=5)
    assert r.execute_command("LOCK.RELEASE", KEY, "holder") == 1
    assert raw_status(r) is None


# ---- watchdog ------------------------------------------------------------------------------


def test_watchdog_keeps_the_lease_alive_and_stops_on_exit(r: redis.Redis, monitor: Monitor) -> None:
    lost = LostRecorder()
    lock = Lock(r, KEY, ttl=0.5, watchdog=1000, on_lost=lost)
    with lock as token:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:  # the work: four TTLs
            assert lock.check() == token
            time.sleep(0.05)
        s = raw_status(r)
        assert s is not None and (s["owner"], s["token"]) == (lock.owner, token)
        assert 0 < s["ttl"] <= 500
        assert watchdog_threads()
    assert raw_status(r) is None
    assert not watchdog_threads(), "the watchdog thread outlived release"
    monitor.sync(r)
    renewals = len(monitor.commands("LOCK.RENEW"))
    assert renewals >= 4, f"only {renewals} renewals in 2 s with ttl 0.5"
    time.sleep(3 * lock.watchdog_interval)
    monitor.sync(r)
    assert len(monitor.commands("LOCK.RENEW")) == renewals, "LOCK.RENEW after release"
    assert lost.calls == []


def _take_over(r: redis.Redis, owner: str, ttl_ms: int = 100_000) -> int:
    r.execute_command("DEL", KEY)
    token = r.execute_command("LOCK.ACQUIRE", KEY, owner, ttl_ms)
    assert isinstance(token, int)
    return token


@pytest.mark.parametrize("same_owner", [False, True], ids=["other-owner", "same-owner"])
def test_watchdog_never_renews_a_grant_that_changed_hands(
    r: redis.Redis, monitor: Monitor, same_owner: bool
) -> None:
    lost = LostRecorder()
    lock = Lock(r, KEY, owner="job", ttl=0.5, watchdog=1000, on_lost=lost)
    token = tok(lock.acquire())

    # One renewal first: the watchdog is running.
    def renewed() -> bool:
        monitor.sync(r)
        return bool(monitor.commands("LOCK.RENEW"))

    wait_until("a renewal", renewed)
    new_owner = "job" if same_owner else "intruder"
    other = _take_over(r, new_owner)
    assert other > token
    err = lost.wait(5)
    assert isinstance(err, LockLost) and err.token == token
    assert lock.lost and lock.lost_reason == err.reason and "LOCK.RENEW" in err.reason
    assert not lock.held
    with pytest.raises(LockLost):
        lock.check()
    # The watchdog stopped: no renewal after the refused one, and on_lost once.
    wait_until("the watchdog thread ending", lambda: not watchdog_threads(), timeout=5)
    time.sleep(3 * lock.watchdog_interval)
    monitor.sync(r)
    for cmd in monitor.commands("LOCK.RENEW"):
        assert cmd[-2:] == ["TOKEN", str(token)]
    s = raw_status(r)
    assert s is not None and (s["owner"], s["token"]) == (new_owner, other)
    assert s["ttl"] > 90_000, "the other grant's TTL was touched"
    with pytest.raises(LockLost):
        lock.release()
    assert len(lost.calls) == 1
    s = raw_status(r)
    assert s is not None and (s["owner"], s["token"]) == (new_owner, other)


def test_with_exit_raises_lock_lost_after_a_loss(r: redis.Redis) -> None:
    lost = LostRecorder()
    lock = Lock(r, KEY, ttl=0.5, watchdog=1000, on_lost=lost)
    with pytest.raises(LockLost) as info, lock as token:
        other = _take_over(r, "intruder")
        lost.wait(5)
    assert info.value.token == token
    assert held(r)["token"] == other
    # The block's own exception wins over the loss.
    lost2 = LostRecorder()
    r.execute_command("DEL", KEY)
    with pytest.raises(ZeroDivisionError), Lock(r, KEY, ttl=0.5, watchdog=1000, on_lost=lost2):
        _take_over(r, "intruder2")
        lost2.wait(5)
        raise ZeroDivisionError("the block fails")
    assert held(r)["owner"] == "intruder2"


def test_watchdog_bound_then_lost_when_the_lease_ends(r: redis.Redis, monitor: Monitor) -> None:
    lost = LostRecorder()
    lock = Lock(r, KEY, ttl=0.5, watchdog=2, on_lost=lost)
    acquired = time.monotonic()
    token = tok(lock.acquire())
    err = lost.wait(10)
    after = lost.at - acquired  # type: ignore[operator]
    # Two renewals, each at least one interval apart, then a full TTL.
    assert after >= 2 * lock.watchdog_interval + 0.5 - 0.02, f"lost after {after:.3f} s"
    assert after < 2 * lock.watchdog_interval + 0.5 + 2.0, f"lost after {after:.3f} s"
    assert err.token == token and "2 renewals" in err.reason
    # The lease really ends then: the key goes within moments.
    wait_until("the key expiring", lambda: raw_status(r) is None, timeout=1.0)
    monitor.sync(r)
    assert len(monitor.commands("LOCK.RENEW")) == 2
    with pytest.raises(LockLost):
        lock.check()
    with pytest.raises(LockLost):
        lock.release()
    assert len(lost.calls) == 1


# ---- bounded network -----------------------------------------------------------------------


def test_release_on_a_stopped_server_is_bounded(server_factory: ServerFactory) -> None:
    s = server_factory()
    client = s.client(socket_timeout=None)  # the caller's own client: no timeout at all
    io = 0.3
    lock = Lock(client, KEY, ttl=3600, watchdog=10_000, watchdog_interval=0.05, io_timeout=io)
    lock.acquire()
    s.sigstop()
    try:
        started = time.monotonic()
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            lock.release()
        elapsed = time.monotonic() - started
        assert elapsed < 4 * io + 1.0, f"release took {elapsed:.2f} s"
        other = Lock(client, "test:other", ttl=10, io_timeout=io)
        started = time.monotonic()
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            other.acquire()
        elapsed = time.monotonic() - started
        assert elapsed < 2 * io + 1.0, f"acquire took {elapsed:.2f} s"
    finally:
        s.sigcont()
        client.close()


def test_waiting_acquire_on_a_stopped_server_is_bounded(server_factory: ServerFactory) -> None:
    s = server_factory()
    client = s.client(socket_timeout=None)
    io = 0.3
    s.sigstop()
    try:
        lock = Lock(client, KEY, ttl=10, wait=math.inf, io_timeout=io)
        fut = spawn(lock.acquire)
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            fut.result(timeout=4 * io + 1.0)
    finally:
        s.sigcont()
        client.close()


# ---- Redis Cluster -------------------------------------------------------------------------


def _second_client(cluster: Any) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes()],
        socket_timeout=30,
    )


def test_cluster_lock_on_every_master(cluster: Any, rc: RedisCluster) -> None:
    keys: dict[int, str] = {}
    for i in range(200):
        key = f"{{sku:{i}}}:lock"
        keys.setdefault(cluster.node_for_slot(rc.keyslot(key)).port, key)
        if len(keys) == len(cluster.nodes):
            break
    assert len(keys) == len(cluster.nodes)
    for port, key in keys.items():
        lock = Lock(rc, key, ttl=10)
        token = tok(lock.acquire())
        assert isinstance(token, int)
        with redis.Redis(host="127.0.0.1", port=port) as node:
            s = raw_status(node, key)
        assert s is not None and (s["owner"], s["token"]) == (lock.owner, token)
        assert lock.renew(ttl=60) == token
        assert held(rc, key)["ttl"] > 59000
        st = lock.status()
        assert st is not None and st.token == token
        assert Lock(rc, key, ttl=10).acquire() is None
        lock.release()
        assert raw_status(rc, key) is None


def test_cluster_wait_across_two_clients(cluster: Any, rc: RedisCluster) -> None:
    key = "{sku:1}:lock"
    rc2 = _second_client(cluster)
    try:
        holder = Lock(rc, key, ttl=30)
        t0 = tok(holder.acquire())
        waiter = Lock(rc2, key, ttl=30, wait=20)
        fut = spawn(waiter.acquire)
        wait_until("queued", lambda: waiters(rc, key) == 1)
        holder.release()
        t1 = tok(fut.result(timeout=10))
        assert isinstance(t1, int) and t1 > t0
        assert held(rc, key)["owner"] == waiter.owner
        waiter.release()
        assert raw_status(rc, key) is None
    finally:
        rc2.close()


def test_cluster_lock_and_stock_in_one_slot(rc: RedisCluster) -> None:
    lock_key, stock_key = "{sku:1}:lock", "{sku:1}"
    assert rc.keyslot(lock_key) == rc.keyslot(stock_key)
    stock = Stock(rc, stock_key)
    stock.set(10)
    first = Lock(rc, lock_key, ttl=10)
    with first as old:
        assert stock.deduct(1, id="order-1", fence=old) == Deducted(9)
    with Lock(rc, lock_key, ttl=10) as new:
        assert new > old
        assert stock.deduct(2, id="order-2", fence=new) == Deducted(7)
    with pytest.raises(StaleToken) as info:
        stock.deduct(1, id="order-3", fence=old)
    assert (info.value.token, info.value.highest) == (old, new)
    assert stock.get() == 7
    assert redis_fence.StaleToken is StaleToken


# ---- defects found by review, fixed (each test failed before its fix) ----------------------


def test_check_after_a_wait_longer_than_the_ttl(r: redis.Redis) -> None:
    holder = Lock(r, KEY, owner="holder", ttl=30)
    holder.acquire()
    lock = Lock(r, KEY, ttl=1.0, wait=10)
    fut = spawn(lock.acquire)
    wait_until("queued", lambda: waiters(r) == 1)
    time.sleep(1.2)  # the wait itself lasts longer than the TTL: that is the case under test
    holder.release()
    token = tok(fut.result(timeout=10))
    s = raw_status(r)
    assert s is not None and s["token"] == token and s["ttl"] > 0  # the server says: held
    assert lock.check() == token
    lock.release()


@pytest.mark.parametrize("wait", [None, 1.0], ids=["no-wait", "wait"])
def test_cluster_lock_follows_ask_during_a_slot_migration(
    cluster: Any, rc: RedisCluster, wait: float | None
) -> None:
    key = "{migrating}:lock"
    slot = rc.keyslot(key)
    src = cluster.node_for_slot(slot)
    dst = next(n for n in cluster.nodes if n is not src)
    with src.client(decode_responses=True) as s, dst.client(decode_responses=True) as d:
        src_id, dst_id = s.execute_command("CLUSTER", "MYID"), d.execute_command("CLUSTER", "MYID")
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        try:
            # The cluster client itself follows the ASK for a key the source does not have.
            assert isinstance(rc.execute_command("LOCK.ACQUIRE", key + "-raw", "o", 10000), int)
            lock = Lock(rc, key, ttl=10, wait=wait)
            token = tok(lock.acquire())
            assert isinstance(token, int)
        finally:
            for c in (s, d):
                c.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
