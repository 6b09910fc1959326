"""A lock with a fencing token, on ``LOCK.*`` (asyncio): the twin of ``redis_fence.Lock``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Union

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .. import _protocol as p
from .._lockbase import LockBase, OnLost
from .._route import _any, log
from ..errors import LockLost, LockNotAcquired, WrongType, map_error
from ..results import LockStatus

__all__ = ["Lock"]

AsyncClient = Union["Redis", "RedisCluster"]


async def _within(seconds: float, call: Awaitable[Any]) -> Any:
    """``call`` bounded by ``seconds`` (``asyncio.TimeoutError`` then): ``asyncio.timeout`` where
    there is one (Python 3.11), a third of ``asyncio.wait_for``'s cost per call."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await call
    return await asyncio.wait_for(call, seconds)


# Clean-ups that outlive a cancelled caller: kept here so they are not collected mid-way.
_background: set[asyncio.Task[Any]] = set()


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
        self.client = client
        super().__init__(
            client, key, owner, ttl, wait, watchdog, watchdog_interval, io_timeout, on_lost
        )
        self._lost_future: asyncio.Future[LockLost] | None = None
        self._task: asyncio.Task[None] | None = None

    async def wait_lost(self) -> LockLost:
        """Completes with the ``LockLost`` when the held lock is found lost."""
        if self._lost is not None:
            return self._lost
        if self._lost_future is None:
            self._lost_future = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._lost_future)

    # ---- commands ------------------------------------------------------------------------

    async def acquire(self) -> int | None:
        if self._token is not None and self._lost is None:
            raise rx.LockError(f"lock {self.key!r} is already held by this handle; use renew()")
        started = time.monotonic()
        if self._wait_ms is None:
            reply = await self._call(p.lock_acquire(self.key, self.owner, self._ttl_ms, None))
        else:
            # Granted while we waited: the lease is counted from the reply.
            reply, started = await self._acquire_waiting(self._wait_ms)
        token = p.parse_token(reply)
        if token is not None:
            self._granted(token, started)
        return token

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
        token = self._held_token()
        await self._stop_watchdog()
        try:
            lost = self._lost
            if lost is not None:
                await self._call_quietly(p.lock_release(self.key, self.owner, token))
                raise lost
            released = await self._call(p.lock_release(self.key, self.owner, token))
            if p.as_int(released) != 1:
                raise self._mark_lost(
                    token, "LOCK.RELEASE found the lock expired or in other hands"
                )
        finally:
            if self._token == token:
                self._token = None
                self._lost = None
                self._lost_future = None

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

    async def _call(self, args: list[p.Arg], **options: Any) -> Any:
        try:
            return await _within(self.io_timeout, self.client.execute_command(*args, **options))
        except asyncio.TimeoutError:
            raise rx.TimeoutError(
                f"{args[0]!s} on {self.key!r}: no reply within {self.io_timeout} s"
            ) from None
        except rx.ResponseError as e:
            raise map_error(e) from None

    async def _call_quietly(self, args: list[p.Arg], **options: Any) -> Any | None:
        try:
            return await self._call(args, **options)
        except Exception as e:
            log.warning("redis-fence: %s on %r failed: %s", args[0], self.key, e)
            return None

    async def _blocking_connection(
        self, ask: tuple[str, int] | None
    ) -> tuple[AbstractConnection, ClusterNode | None]:
        client = self.client
        if isinstance(client, RedisCluster):
            await client.initialize()
            if ask is None:
                node = client.get_node_from_key(self.key)  # type: ignore[arg-type]
            else:
                node = client.get_node(host=ask[0], port=ask[1])
            if node is None:
                raise rx.ConnectionError(f"no cluster node serves the key {self.key!r}")
            cls: Any = node.connection_class
            kwargs = dict(node.connection_kwargs)
        else:
            node = None
            pool = client.connection_pool
            cls = pool.connection_class
            kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = None
        kwargs["socket_connect_timeout"] = self.io_timeout
        kwargs["retry"] = Retry(NoBackoff(), 0)
        kwargs.pop("retry_on_timeout", None)
        conn: AbstractConnection = _any(cls)(**kwargs)
        return conn, node

    async def _acquire_waiting(self, wait_ms: int) -> tuple[Any, float]:
        """``LOCK.ACQUIRE … WAIT`` on a connection of its own: the reply and when it came.
        Every step is bounded (``io_timeout``; the grant by the wait plus ``io_timeout``);
        abandoned (cancelled, timed out, cut off), the waiter leaves the queue and a grant made
        meanwhile is released, in a task that outlives the cancellation."""
        deadline = math.inf if wait_ms == 0 else time.monotonic() + wait_ms / 1000
        ask: tuple[str, int] | None = None
        for attempt in range(3):
            left_ms = 0 if wait_ms == 0 else max(1, math.ceil((deadline - time.monotonic()) * 1000))
            conn, node = await self._blocking_connection(ask)
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
            except rx.AskError as e:
                if attempt == 2:
                    raise
                ask = (e.host, int(e.port))
            except rx.MovedError:
                if not isinstance(self.client, RedisCluster) or attempt == 2:
                    raise
                ask = None
                await self.client.nodes_manager.initialize()
            except rx.ResponseError as e:
                raise map_error(e) from None
            except BaseException as e:
                cleanup = asyncio.ensure_future(self._abandon(client_id, node))
                _background.add(cleanup)
                cleanup.add_done_callback(_background.discard)
                with contextlib.suppress(BaseException):
                    await asyncio.shield(cleanup)
                if isinstance(e, asyncio.TimeoutError):
                    raise rx.TimeoutError(
                        f"{step} on {self.key!r}: no reply in time (io_timeout {self.io_timeout} s)"
                    ) from e
                raise
            finally:
                with contextlib.suppress(BaseException):
                    await conn.disconnect()
        raise AssertionError("unreachable")

    async def _abandon(self, client_id: int | None, node: ClusterNode | None) -> None:
        if client_id is not None:
            options = {} if node is None else {"target_nodes": node}
            await self._call_quietly(["CLIENT", "UNBLOCK", client_id], **options)
        await self._call_quietly(p.lock_release(self.key, self.owner, None))

    def _granted(self, token: int, started: float) -> None:
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
        with contextlib.suppress(BaseException):
            await task

    async def _watch(self, token: int) -> None:
        renewals = 0
        while True:
            await asyncio.sleep(self.watchdog_interval)
            if self._token != token:
                return
            if renewals >= self.watchdog:
                left = self._lease_end - time.monotonic()
                if left > 0:
                    await asyncio.sleep(left)
                self._mark_lost(token, f"the watchdog made its {self.watchdog} renewals")
                return
            started = time.monotonic()
            try:
                reply = await self._call(p.lock_renew(self.key, self.owner, self._ttl_ms, token))
            except (rx.ConnectionError, rx.TimeoutError) as e:
                if time.monotonic() >= self._lease_end:
                    self._mark_lost(token, f"no renewal succeeded before the lease ended ({e})")
                    return
                continue
            except rx.ResponseError as e:
                reason = "the key now holds another type" if isinstance(e, WrongType) else str(e)
                self._mark_lost(token, f"LOCK.RENEW failed: {reason}")
                return
            if reply is None:
                self._mark_lost(token, "LOCK.RENEW refused: the lock expired or changed hands")
                return
            renewals += 1
            self._lease_end = max(self._lease_end, started + self._ttl_ms / 1000)
