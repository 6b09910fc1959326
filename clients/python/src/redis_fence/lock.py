"""A lock with a fencing token, on ``LOCK.*`` (sync, threads)."""

from __future__ import annotations

import math
import threading
import time
from types import TracebackType
from typing import Any, Callable

from redis import exceptions as rx
from redis.connection import ConnectionPool

from . import _protocol as p
from ._lockbase import LockBase, OnLost
from ._route import Route, SyncClient, _any, log, pipeline_on
from .errors import CommandError, LockLost, LockNotAcquired, WrongType, map_error
from .results import LockStatus

__all__ = ["Lock"]


class Lock(LockBase):
    """A lock on ``key`` for ``owner``, held ``ttl`` seconds per grant or renewal.

    ``wait``: None takes the lock only if it is free now; a number of seconds waits inside
    Redis (``LOCK.ACQUIRE … WAIT``, fair, first come first served) that long at most;
    ``math.inf`` waits without limit. ``watchdog``: the most renewals a background thread makes
    (every ``watchdog_interval`` seconds, default ``ttl / 3``) while the lock is held; 0, the
    default, makes none. ``io_timeout`` bounds every connect, command and reply of the lock
    other than the wait itself (the wait is bounded by ``wait + io_timeout``). ``on_lost`` is
    called once, from the watchdog thread or the caller's, when the lock is found lost.

    ``with lock as token:`` acquires (``LockNotAcquired`` when it cannot), runs the block and
    releases; if the lock was lost meanwhile, ``LockLost`` is raised on the way out.
    """

    def __init__(
        self,
        client: SyncClient,
        key: p.KeyT,
        owner: str | None = None,
        ttl: float = 30.0,
        wait: float | None = None,
        *,
        watchdog: int = 0,
        watchdog_interval: float | None = None,
        io_timeout: float = 2.0,
        on_lost: OnLost | None = None,
    ) -> None:
        super().__init__(
            client, key, owner, ttl, wait, watchdog, watchdog_interval, io_timeout, on_lost
        )
        self._route = Route(client, key, self.io_timeout)
        self._state = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- commands ------------------------------------------------------------------------

    def acquire(self) -> int | None:
        """Take the lock: the token, or None when another owner holds it (after ``wait``)."""
        if self._token is not None and self._lost is None:
            raise rx.LockError(f"lock {self.key!r} is already held by this handle; use renew()")
        started = time.monotonic()
        if self._wait_ms is None:
            token = self._call(p.lock_acquire(self.key, self.owner, self._ttl_ms, None))
        else:
            # Granted while we waited: the lease is counted from the reply, which the server
            # sends the moment it grants.
            token, started = self._acquire_waiting(self._wait_ms)
        token = p.parse_token(token)
        if token is not None:
            self._granted(token, started)
        return token

    def renew(self, ttl: float | None = None) -> int:
        """Reset the TTL of our grant (``TOKEN``): the token, or ``LockLost`` when the grant
        ended (expired, or changed hands)."""
        token = self._held_token()
        ttl_ms = self._ttl_ms if ttl is None else p.seconds_to_ms(ttl, "ttl")
        started = time.monotonic()
        reply = p.parse_token(self._call(p.lock_renew(self.key, self.owner, ttl_ms, token)))
        if reply is None:
            raise self._mark_lost(token, "LOCK.RENEW refused: the lock expired or changed hands")
        with self._state:
            self._lease_end = max(self._lease_end, started + ttl_ms / 1000)
        return reply

    def release(self) -> None:
        """Stop the watchdog and free our grant (``TOKEN``). ``LockLost`` when the grant had
        already ended (or was reported lost); bounded by about two ``io_timeout``s on a dead
        server (the release and its one retry)."""
        token = self._held_token()
        self._stop_watchdog()
        try:
            lost = self._lost
            if lost is not None:
                # Reported lost (perhaps only because renewals failed): free it all the same.
                self._route.call_quietly(*p.lock_release(self.key, self.owner, token))
                raise lost
            released = self._call(p.lock_release(self.key, self.owner, token))
            if p.as_int(released) != 1:
                raise self._mark_lost(
                    token, "LOCK.RELEASE found the lock expired or in other hands"
                )
        finally:
            with self._state:
                if self._token == token:
                    self._token = None
                    self._lost = None

    def status(self) -> LockStatus | None:
        """``LOCK.STATUS``: who holds the key now (None when free)."""
        return p.parse_lock_status(self._call(["LOCK.STATUS", self.key]))

    # ---- context manager -----------------------------------------------------------------

    def __enter__(self) -> int:
        token = self.acquire()
        if token is None:
            raise LockNotAcquired(
                f"lock {self.key!r} is held by another owner"
                + ("" if self.wait is None else f" (waited {self.wait} s)")
            )
        return token

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is None:
            return
        try:
            self.release()
        except LockLost:
            if exc is None:
                raise
        except Exception as e:
            if exc is None:
                raise
            log.warning("redis-fence: releasing %r failed: %s", self.key, e)

    # ---- inside ------------------------------------------------------------------------

    def _call(self, args: list[p.Arg]) -> Any:
        try:
            return self._route.call(*args)
        except rx.ResponseError as e:
            raise map_error(e) from None

    def _acquire_waiting(self, wait_ms: int) -> tuple[Any, float]:
        """``LOCK.ACQUIRE … WAIT`` on a connection of its own: the reply and when it came.

        The connect, ``CLIENT ID`` and every other read are bounded by ``io_timeout``; the
        grant's reply by the wait plus ``io_timeout`` (no limit for ``math.inf``). Abandoned for
        any reason (a timeout, a lost connection, ``KeyboardInterrupt``), the waiter is taken
        out of the queue (``CLIENT UNBLOCK`` of the connection, known from ``CLIENT ID``) and a
        grant made meanwhile is released (``LOCK.RELEASE key owner``) before the error goes
        on."""
        deadline = math.inf if wait_ms == 0 else time.monotonic() + wait_ms / 1000
        ask: tuple[str, int] | None = None
        for attempt in range(3):
            left_ms = 0 if wait_ms == 0 else max(1, math.ceil((deadline - time.monotonic()) * 1000))
            read_timeout = None if wait_ms == 0 else left_ms / 1000 + self.io_timeout
            conn, pool = self._route.blocking_connection(ask)
            c = _any(conn)
            client_id: int | None = None
            try:
                c.connect()
                # ASKING lets the next command only in: it goes right before the acquire.
                commands: list[list[p.Arg]] = [["CLIENT", "ID"]]
                commands += [["ASKING"]] if ask is not None else []
                commands.append(p.lock_acquire(self.key, self.owner, self._ttl_ms, left_ms))
                pipeline_on(conn, commands)
                client_id = _client_id(c.read_response)
                if ask is not None:
                    c.read_response()
                reply = c.read_response(timeout=read_timeout)
                return reply, time.monotonic()
            except rx.AskError as e:
                if attempt == 2:
                    raise
                ask = (e.host, int(e.port))
            except rx.MovedError as e:
                self._route.note_error(e)
                ask = None
                if attempt == 2:
                    raise
            except rx.ResponseError as e:
                raise map_error(e) from None
            except BaseException as e:
                self._route.note_error(e)
                self._abandon(client_id, pool)
                raise
            finally:
                c.disconnect()
        raise AssertionError("unreachable")

    def _abandon(self, client_id: int | None, pool: ConnectionPool) -> None:
        if client_id is not None:
            self._route.call_quietly("CLIENT", "UNBLOCK", client_id, pool=pool)
        self._route.call_quietly(*p.lock_release(self.key, self.owner, None))

    def _granted(self, token: int, started: float) -> None:
        with self._state:
            self._token = token
            self._lost = None
            self._lease_end = started + self._ttl_ms / 1000
        self._stop.set()  # an older watchdog (of a grant found lost) stops too
        if self.watchdog:
            self._stop = threading.Event()
            thread = threading.Thread(
                target=self._watch,
                args=(token, self._stop),
                name=f"redis-fence watchdog {self.key!r}",
                daemon=True,
            )
            self._thread = thread
            thread.start()

    def _mark_lost(self, token: int, reason: str) -> LockLost:
        with self._state:
            if self._lost is not None and self._lost.token == token:
                return self._lost
            if self._token != token:
                return LockLost(str(self.key), token, reason)
            lost = LockLost(str(self.key), token, reason)
            self._lost = lost
        if self.on_lost is not None:
            try:
                self.on_lost(lost)
            except Exception:
                log.exception("redis-fence: on_lost raised")
        return lost

    def _stop_watchdog(self) -> None:
        self._stop.set()
        # Not joined: a renewal in flight acts on our grant only (TOKEN) and the thread ends
        # without a word once it sees the event, so the release need not wait for it.
        self._thread = None

    def _watch(self, token: int, stop: threading.Event) -> None:
        renewals = 0
        while not stop.wait(self.watchdog_interval):
            if renewals >= self.watchdog:
                # The bound is reached: no more renewals; the lease ends at its TTL.
                left = self._lease_end - time.monotonic()
                if left > 0 and stop.wait(left):
                    return
                self._mark_lost(token, f"the watchdog made its {self.watchdog} renewals")
                return
            started = time.monotonic()
            try:
                reply = self._route.call(*p.lock_renew(self.key, self.owner, self._ttl_ms, token))
            except (rx.ConnectionError, rx.TimeoutError) as e:
                if stop.is_set():
                    return
                if time.monotonic() >= self._lease_end:
                    self._mark_lost(token, f"no renewal succeeded before the lease ended ({e})")
                    return
                continue
            except rx.ResponseError as e:
                if stop.is_set():
                    return
                err = map_error(e)
                reason = (
                    "the key now holds another type" if isinstance(err, WrongType) else str(err)
                )
                if isinstance(err, (CommandError, rx.ResponseError)):
                    self._mark_lost(token, f"LOCK.RENEW failed: {reason}")
                return
            if stop.is_set():
                return
            if reply is None:
                self._mark_lost(token, "LOCK.RENEW refused: the lock expired or changed hands")
                return
            renewals += 1
            with self._state:
                self._lease_end = max(self._lease_end, started + self._ttl_ms / 1000)


def _client_id(read: Callable[[], Any]) -> int | None:
    """The reply to ``CLIENT ID``; None when refused (an ACL user without ``CLIENT``): the wait
    then goes on, and an abandoned one is cleaned up by the release alone."""
    try:
        return p.as_int(read())
    except rx.ResponseError:
        return None
