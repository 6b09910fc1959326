"""A lock with a fencing token, on ``LOCK.*`` (asyncio): the twin of ``redis_fence.Lock``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import Any

from redis import exceptions as rx

from .. import _protocol as p
from .._lockbase import LockBase, OnLost, ends_the_grant
from .._route import _any, log
from ..errors import LockInUse, LockLost, LockNotAcquired, Unblocked, map_error
from ..results import LockStatus
from ._route import AsyncClient, AsyncRoute, Target

__all__ = ["Lock"]


# Clean-ups that outlive a cancelled caller: kept here so they are not collected mid-way.
_background: set[asyncio.Future[Any]] = set()


class Lock(LockBase):
    """The asyncio twin of :class:`redis_fence.Lock` (same arguments and rules).

    The watchdog is a task; every call but the wait itself is bounded by ``io_timeout``
    (``asyncio.wait_for``), whatever the client's own timeouts. A ``wait`` abandoned by the
    caller (the task cancelled, a timeout around it) takes the waiter out of the queue and
    releases a grant made meanwhile, in a task that outlives the cancellation.
    ``await lock.wait_lost()`` returns the ``LockLost`` once the lock is found lost, to race
    the work against it.
    """

    def __init__(
        self,
        client: AsyncClient,
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
        self.client = client
        self._route = AsyncRoute(client, key, self.io_timeout)
        self._acquiring = False
        self._later: tuple[asyncio.Task[None], asyncio.Event] | None = None
        self._lost_future: asyncio.Future[LockLost] | None = None
        self._task: asyncio.Task[None] | None = None

    async def wait_lost(self) -> LockLost:
        """Completes with the ``LockLost`` once the held lock is found lost: by the watchdog,
        a refused call, or (with or without a watchdog) its lease running out unrenewed.
        ``LockNotAcquired`` when the lock is released first, or not held."""
        while True:
            if self._lost is not None:
                return self._lost
            token = self._held_token()
            if self._lost_future is None or self._lost_future.done():
                self._lost_future = asyncio.get_running_loop().create_future()
            future = self._lost_future  # release() drops it from the lock, not from us
            left = self._lease_end - time.monotonic()
            if left <= 0:
                return self._mark_lost(token, "the lease ran out without a renewal")
            done, _ = await asyncio.wait({future}, timeout=left)
            if done:
                return future.result()

    # ---- commands ------------------------------------------------------------------------

    async def acquire(self) -> int | None:
        """As ``redis_fence.Lock.acquire``; a cancelled or timed-out call releases with its
        owner (in a task that outlives the cancellation), so no grant is left behind."""
        if self._acquiring or (self._token is not None and self._lost is None):
            raise LockInUse(self.key)
        self._acquiring = True
        try:
            await self._stop_release_later()
            started = time.monotonic()
            if self._wait_ms is None:
                try:
                    reply = await self._call(
                        p.lock_acquire(self.key, self.owner, self._ttl_ms, None)
                    )
                except rx.ResponseError:
                    raise  # an error reply: nothing was granted
                except BaseException as e:
                    await self._release_owner(isinstance(e, (rx.TimeoutError, TimeoutError)))
                    raise
            else:
                # Granted while we waited: the lease is counted from the reply.
                reply, started = await self._acquire_waiting(self._wait_ms)
            token = p.parse_token(reply)
            if token is not None:
                self._granted(token, started)
            return token
        finally:
            self._acquiring = False

    async def renew(self, ttl: float | None = None) -> int:
        token = self._held_token()
        ttl_ms = self._ttl_ms if ttl is None else p.seconds_to_ms(ttl, "ttl")
        started = time.monotonic()
        reply = p.parse_token(await self._call(p.lock_renew(self.key, self.owner, ttl_ms, token)))
        if reply is None:
            raise self._mark_lost(token, "LOCK.RENEW refused: the lock expired or changed hands")
        self._lease_end = max(self._lease_end, started + ttl_ms / 1000)
        return reply

    async def release(self) -> None:
        """As ``redis_fence.Lock.release`` (one resend after a lost reply, its 0 read right);
        about three ``io_timeout``s at most on a dead server. Cancelled, the release goes on
        to its end in a task of its own and the cancellation is raised."""
        self._held_token()
        task = asyncio.ensure_future(self._release())
        _keep(task)
        await asyncio.shield(task)

    async def _release(self) -> None:
        token = self._held_token()
        await self._stop_watchdog()
        try:
            lost = self._lost
            if lost is not None:
                await self._route.call_quietly(*p.lock_release(self.key, self.owner, token))
                raise lost
            args = p.lock_release(self.key, self.owner, token)
            try:
                released, resent = await self._call(args), False
            except (rx.ConnectionError, rx.TimeoutError):
                released, resent = await self._call(args), True
            if p.as_int(released) != 1:
                if resent and time.monotonic() < self._lease_end:
                    return  # the first release ran; its reply was lost
                raise self._mark_lost(
                    token, "LOCK.RELEASE found the lock expired or in other hands"
                )
        finally:
            if self._token == token:
                self._token = None
                self._lost = None
                future, self._lost_future = self._lost_future, None
                if future is not None and not future.done():
                    future.set_exception(LockNotAcquired(f"lock {self.key!r} was released"))
                    future.exception()  # retrieved: no "never retrieved" warning

    async def status(self) -> LockStatus | None:
        return p.parse_lock_status(await self._call(["LOCK.STATUS", self.key]))

    # ---- context manager -----------------------------------------------------------------

    async def __aenter__(self) -> int:
        token = await self.acquire()
        if token is None:
            raise LockNotAcquired(
                f"lock {self.key!r} is held by another owner"
                + ("" if self.wait is None else f" (waited {self.wait} s)")
            )
        return token

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is None:
            return
        try:
            await self.release()
        except LockLost:
            if exc is None:
                raise
        except Exception as e:
            if exc is None:
                raise
            log.warning("redis-fence: releasing %r failed: %s", self.key, e)

    # ---- inside ------------------------------------------------------------------------

    async def _call(self, args: list[p.Arg]) -> Any:
        try:
            return await self._route.call(*args)
        except rx.ResponseError as e:
            raise map_error(e) from None

    async def _acquire_waiting(self, wait_ms: int) -> tuple[Any, float]:
        """``LOCK.ACQUIRE … WAIT`` on a connection of its own: the reply and when it came.
        Every step is bounded (``io_timeout``; the grant by the wait plus ``io_timeout``);
        abandoned (cancelled, timed out, cut off), the waiter leaves the queue and a grant made
        meanwhile is released, in a task that outlives the cancellation."""
        deadline = math.inf if wait_ms == 0 else time.monotonic() + wait_ms / 1000
        ask: tuple[str, int] | None = None
        for attempt in range(3):
            left_ms = 0 if wait_ms == 0 else max(1, math.ceil((deadline - time.monotonic()) * 1000))
            conn, address = await self._route.blocking_connection(ask)
            client_id: int | None = None
            step = "connect"
            try:
                await asyncio.wait_for(_any(conn).connect(), self.io_timeout)
                # ASKING lets the next command only in: it goes right before the acquire.
                commands: list[list[p.Arg]] = [["CLIENT", "ID"]]
                commands += [["ASKING"]] if ask is not None else []
                commands.append(p.lock_acquire(self.key, self.owner, self._ttl_ms, left_ms))
                await conn.send_packed_command(conn.pack_commands(commands))
                step = "CLIENT ID"
                try:
                    reply = await asyncio.wait_for(conn.read_response(), self.io_timeout)
                    client_id = p.as_int(reply)
                except rx.ResponseError:
                    client_id = None  # an ACL user without CLIENT: the release alone cleans up
                if ask is not None:
                    await asyncio.wait_for(conn.read_response(), self.io_timeout)
                step = "LOCK.ACQUIRE … WAIT"
                if wait_ms == 0:
                    reply = await conn.read_response()
                else:
                    reply = await asyncio.wait_for(
                        conn.read_response(), left_ms / 1000 + self.io_timeout
                    )
                return reply, time.monotonic()
            except (rx.AskError, rx.MovedError) as e:
                if not self._route.is_cluster or attempt == 2:
                    raise
                ask = await self._route.redirected(e)
            except rx.TryAgainError as e:
                raise Unblocked("TRYAGAIN", f"TRYAGAIN {e}") from None
            except rx.ResponseError as e:
                raise map_error(e) from None
            except BaseException as e:
                stalled = isinstance(e, (rx.TimeoutError, TimeoutError))
                await _clean_up(self._abandon(client_id, address, stalled))
                if isinstance(e, asyncio.TimeoutError):
                    raise rx.TimeoutError(
                        f"{step} on {self.key!r}: no reply in time (io_timeout {self.io_timeout} s)"
                    ) from e
                raise
            finally:
                # Not awaited here: nothing may stand between the grant's reply and its
                # return (a cancellation there would lose a grant no clean-up sees).
                _keep(asyncio.ensure_future(_disconnect(conn)))
        raise AssertionError("unreachable")

    async def _abandon(self, client_id: int | None, address: Target | None, stalled: bool) -> None:
        if client_id is not None:
            await self._route.call_quietly("CLIENT", "UNBLOCK", client_id, target=address)
        await self._release_owner(stalled)

    async def _release_owner(self, stalled: bool) -> None:
        """``LOCK.RELEASE key owner`` after a call whose reply was lost (a grant may have been
        made). Started at once in a task of its own, which a cancellation of the caller does not
        stop; the caller waits for its first try (bounded by the I/O timeout). When the server
        did not answer in time (``stalled``), the release is tried again in that task, backing
        off, until answered or the grant's TTL has passed. A default owner is replaced at once
        (``_owner_after_failed_clean_up``), so the release can never free a later grant of this
        object; with an owner given, the next ``acquire()`` stops it first."""
        owner = self._owner_after_failed_clean_up()
        deadline = time.monotonic() + self._ttl_ms / 1000 + self.io_timeout
        stop = asyncio.Event()
        first = asyncio.get_running_loop().create_future()

        async def release() -> None:
            delay = 0.05
            while True:
                try:
                    await self._route.call(*p.lock_release(self.key, owner, None))
                    return
                except Exception as e:
                    if not first.done():
                        first.set_result(None)
                        log.warning("redis-fence: LOCK.RELEASE on %r failed: %s", self.key, e)
                    if not stalled or time.monotonic() >= deadline:
                        return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
                delay = min(delay * 2, 1.0)

        task = asyncio.ensure_future(release())
        _keep(task)
        task.add_done_callback(lambda _: _settle(first))
        self._later = (task, stop)
        await asyncio.wait({first})

    async def _stop_release_later(self) -> None:
        """Before a new acquire with the owner given: the deferred release stops, and a try in
        flight is waited for (bounded by the I/O timeout). One from another event loop (now
        closed, or not this one) cannot be awaited here and is left alone."""
        later, self._later = self._later, None
        if later is None or not self._owner_given:
            return
        task, stop = later
        if task.get_loop() is not asyncio.get_running_loop():
            return
        stop.set()
        await asyncio.wait({task})

    def _granted(self, token: int, started: float) -> None:
        if self._task is not None:  # the watchdog of a grant found lost
            self._task.cancel()
            self._task = None
        self._token = token
        self._lost = None
        self._lost_future = None
        self._lease_end = started + self._ttl_ms / 1000
        if self.watchdog:
            self._task = asyncio.ensure_future(self._watch(token))

    def _mark_lost(self, token: int, reason: str) -> LockLost:
        if self._lost is not None and self._lost.token == token:
            return self._lost
        lost = LockLost(str(self.key), token, reason)
        if self._token != token:
            return lost
        self._lost = lost
        if self._lost_future is not None and not self._lost_future.done():
            self._lost_future.set_result(lost)
        if self.on_lost is not None:
            try:
                self.on_lost(lost)
            except Exception:
                log.exception("redis-fence: on_lost raised")
        return lost

    async def _stop_watchdog(self) -> None:
        task, self._task = self._task, None
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        # Waits for it to end without taking its CancelledError for ours: a cancellation of
        # the caller meanwhile still raises here.
        await asyncio.wait({task})

    async def _watch(self, token: int) -> None:
        """As the sync watchdog: a refusal ends the grant; a network error or a transient
        reply is tried again, sooner, until the lease's end."""
        renewals = 0
        delay = self.watchdog_interval
        failure = ""
        while True:
            await asyncio.sleep(delay)
            delay = self.watchdog_interval
            if self._token != token:
                return
            if time.monotonic() >= self._lease_end:
                self._mark_lost(token, f"no renewal succeeded before the lease ended{failure}")
                return
            if renewals >= self.watchdog:
                # No more renewals: the lease ends at its TTL (later if renewed by hand).
                while (left := self._lease_end - time.monotonic()) > 0:
                    await asyncio.sleep(left)
                    if self._token != token:
                        return
                self._mark_lost(token, f"the watchdog made its {self.watchdog} renewals")
                return
            started = time.monotonic()
            try:
                reply = await self._call(p.lock_renew(self.key, self.owner, self._ttl_ms, token))
            except (rx.ConnectionError, rx.TimeoutError) as e:
                failure = f" (last try: {e})"
            except rx.ResponseError as e:
                if ends_the_grant(e):
                    self._mark_lost(token, f"LOCK.RENEW failed: {e}")
                    return
                failure = f" (last try: {e})"
            except Exception as e:  # not a reply nor the network: stop, and say so
                self._mark_lost(token, f"the watchdog stopped on {e!r}")
                return
            else:
                if reply is None:
                    self._mark_lost(token, "LOCK.RENEW refused: the lock expired or changed hands")
                    return
                renewals += 1
                failure = ""
                self._lease_end = max(self._lease_end, started + self._ttl_ms / 1000)
                continue
            left = self._lease_end - time.monotonic()
            delay = min(self.watchdog_interval, max(left / 2, 0.01))


async def _clean_up(work: Awaitable[Any]) -> None:
    """Runs a clean-up in a task of its own that a second cancellation of the caller does not
    stop; that cancellation is raised once the clean-up has been started."""
    task = asyncio.ensure_future(work)
    _keep(task)
    await asyncio.shield(task)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _keep(task: asyncio.Future[Any]) -> None:
    """Holds a task until it ends, so it is not collected mid-way."""
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _disconnect(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect()
