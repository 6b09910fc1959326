"""A lock with a fencing token, on ``LOCK.*`` (sync, threads)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from redis import exceptions as rx
from redis.connection import ConnectionPool

from . import _protocol as p
from ._lockbase import LockBase, OnLost, ends_the_grant
from ._route import Route, SyncClient, _any, log, pipeline_on
from .errors import (
    LockInUse,
    LockLost,
    LockNotAcquired,
    Unblocked,
    map_error,
)
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
        self._acquiring = False
        self._later_mutex = threading.Lock()  # held while a deferred release is sent
        self._later_stop: threading.Event | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- commands ------------------------------------------------------------------------

    def acquire(self) -> int | None:
        """Take the lock: the token, or None when another owner holds it (after ``wait``).

        ``LockInUse`` while this object holds the lock or another thread or task is in its
        ``acquire()``: one ``Lock`` object per holder. A call whose reply is lost (a timeout,
        a dropped connection, ``KeyboardInterrupt``) releases with its owner before the error
        goes on, so a grant made anyway is not left behind."""
        with self._state:
            if self._acquiring or (self._token is not None and self._lost is None):
                raise LockInUse(self.key)
            self._acquiring = True
        try:
            self._stop_release_later()
            started = time.monotonic()
            if self._wait_ms is None:
                try:
                    reply = self._call(p.lock_acquire(self.key, self.owner, self._ttl_ms, None))
                except rx.ResponseError:
                    raise  # an error reply: nothing was granted
                except BaseException as e:
                    self._release_owner(isinstance(e, rx.TimeoutError))
                    raise
            else:
                # Granted while we waited: the lease is counted from the reply, which the
                # server sends the moment it grants.
                reply, started = self._acquire_waiting(self._wait_ms)
            token = p.parse_token(reply)
            if token is not None:
                self._granted(token, started)
            return token
        finally:
            with self._state:
                self._acquiring = False

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
        already ended (or was reported lost). A release whose reply is lost is sent once more
        (with ``TOKEN`` it can only free our grant; if the first one ran, the second finds
        the grant gone, which is then no loss). On a dead server it returns (raising redis-py's
        ``TimeoutError`` or ``ConnectionError``) within about three ``io_timeout``s: a renewal
        in flight, the release and its resend."""
        token = self._held_token()
        self._stop_watchdog()
        try:
            lost = self._lost
            if lost is not None:
                # Reported lost (perhaps only because renewals failed): free it all the same.
                self._route.call_quietly(*p.lock_release(self.key, self.owner, token))
                raise lost
            args = p.lock_release(self.key, self.owner, token)
            try:
                released, resent = self._call(args), False
            except (rx.ConnectionError, rx.TimeoutError):
                released, resent = self._call(args), True
            if p.as_int(released) != 1:
                if resent and time.monotonic() < self._lease_end:
                    return  # the first release ran; its reply was lost
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
            except (rx.AskError, rx.MovedError) as e:
                if attempt == 2:
                    raise
                ask = self._route.redirected(e)
            except rx.TryAgainError as e:
                raise Unblocked("TRYAGAIN", f"TRYAGAIN {e}") from None
            except rx.ResponseError as e:
                raise map_error(e) from None
            except BaseException as e:
                self._abandon(client_id, pool, isinstance(e, rx.TimeoutError))
                raise
            finally:
                c.disconnect()
        raise AssertionError("unreachable")

    def _abandon(self, client_id: int | None, pool: ConnectionPool, stalled: bool) -> None:
        if client_id is not None:
            self._route.call_quietly("CLIENT", "UNBLOCK", client_id, pool=pool)
        self._release_owner(stalled)

    def _release_owner(self, stalled: bool) -> None:
        """``LOCK.RELEASE key owner`` after a call whose reply was lost (a grant may have been
        made). When the server did not answer in time (``stalled``) and the release cannot be
        sent now either, it is tried again in the background, backing off, until answered or
        the grant's TTL has passed; a default owner is then replaced (see
        ``_owner_after_failed_clean_up``), and an owner given is stopped by the next
        ``acquire()``."""
        if self._route.call_quietly(*p.lock_release(self.key, self.owner, None)) is not None:
            return
        if not stalled:
            return
        owner = self._owner_after_failed_clean_up()
        deadline = time.monotonic() + self._ttl_ms / 1000 + self.io_timeout
        stop = threading.Event()
        self._later_stop = stop

        def release_later() -> None:
            delay = 0.05
            while not stop.wait(delay) and time.monotonic() < deadline:
                with self._later_mutex:
                    if stop.is_set():
                        return
                    try:
                        self._route.call(*p.lock_release(self.key, owner, None))
                        return
                    except Exception:
                        delay = min(delay * 2, 1.0)

        threading.Thread(
            target=release_later, name=f"redis-fence release {self.key!r}", daemon=True
        ).start()

    def _stop_release_later(self) -> None:
        """Before a new acquire with the same owner: the deferred release stops, and one in
        flight is waited for (bounded by the I/O timeout), so it cannot free the new grant."""
        stop, self._later_stop = self._later_stop, None
        if stop is not None and self._owner_given:
            stop.set()
            with self._later_mutex:
                pass

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
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            # At most one renewal is in flight, bounded by the I/O timeout; it acts on our
            # grant only (TOKEN) and the thread ends without a word once it sees the event.
            thread.join(timeout=self.io_timeout)

    def _watch(self, token: int, stop: threading.Event) -> None:
        """Renew every interval, at most ``watchdog`` times. A refusal (nil: expired or in
        other hands; ``WRONGTYPE``; an ``ERR``) ends the grant; a network error or a transient
        reply (``BUSY``, ``LOADING``, ``READONLY``, ``CLUSTERDOWN``, ``TRYAGAIN``, ...) is tried
        again, sooner, until the lease's end, when the lock is reported lost."""
        renewals = 0
        delay = self.watchdog_interval
        failure = ""
        while not stop.wait(delay):
            delay = self.watchdog_interval
            if time.monotonic() >= self._lease_end:
                self._mark_lost(token, f"no renewal succeeded before the lease ended{failure}")
                return
            if renewals >= self.watchdog:
                # The bound is reached: no more renewals; the lease ends at its TTL (later if
                # the caller renews by hand meanwhile).
                while (left := self._lease_end - time.monotonic()) > 0:
                    if stop.wait(left):
                        return
                self._mark_lost(token, f"the watchdog made its {self.watchdog} renewals")
                return
            started = time.monotonic()
            try:
                reply = self._route.call(*p.lock_renew(self.key, self.owner, self._ttl_ms, token))
            except (rx.ConnectionError, rx.TimeoutError) as e:
                failure = f" (last try: {e})"
            except rx.ResponseError as e:
                err = map_error(e)
                if ends_the_grant(err):
                    if not stop.is_set():
                        self._mark_lost(token, f"LOCK.RENEW failed: {err}")
                    return
                failure = f" (last try: {err})"
            except Exception as e:  # not a reply nor the network: stop, and say so
                if not stop.is_set():
                    self._mark_lost(token, f"the watchdog stopped on {e!r}")
                return
            else:
                if stop.is_set():
                    return
                if reply is None:
                    self._mark_lost(token, "LOCK.RENEW refused: the lock expired or changed hands")
                    return
                renewals += 1
                failure = ""
                with self._state:
                    self._lease_end = max(self._lease_end, started + self._ttl_ms / 1000)
                continue
            # Not renewed this time: again soon, and the loss is told at the lease's end.
            left = self._lease_end - time.monotonic()
            delay = min(self.watchdog_interval, max(left / 2, 0.01))


def _client_id(read: Callable[[], Any]) -> int | None:
    """The reply to ``CLIENT ID``; None when refused (an ACL user without ``CLIENT``): the wait
    then goes on, and an abandoned one is cleaned up by the release alone."""
    try:
        return p.as_int(read())
    except rx.ResponseError:
        return None
