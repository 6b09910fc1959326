"""Bounded calls for the asyncio lock: the twin of ``redis_fence._route``.

A private client per server (and per event loop: asyncio connections belong to the loop that
made them), with the caller's settings but its own timeouts and no retries, so the lock
decides what is sent again and no call hangs, whatever the caller's client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import weakref
from collections.abc import Awaitable
from typing import Any, Union

from redis import exceptions as rx
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .._protocol import Arg, KeyT
from .._route import _any, log

AsyncClient = Union["Redis", "RedisCluster"]
Target = tuple[str, int]

# Derived clients per caller's client: {(address, timeout, loop id): (loop, client)}.
_Entry = tuple[asyncio.AbstractEventLoop, Redis]
_derived: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], _Entry]] = (
    weakref.WeakKeyDictionary()
)


async def within(seconds: float | None, call: Awaitable[Any]) -> Any:
    """``call`` bounded by ``seconds`` (None: not bounded), ``asyncio.TimeoutError`` then:
    ``asyncio.timeout`` where there is one (Python 3.11), a third of ``asyncio.wait_for``'s
    cost per call."""
    if seconds is None:
        return await call
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await call
    return await asyncio.wait_for(call, seconds)


def _settings(
    cls: Any, kwargs: dict[str, Any], socket_timeout: float | None, connect: float
) -> tuple[Any, dict[str, Any]]:
    kwargs = dict(kwargs)
    kwargs["socket_timeout"] = socket_timeout
    kwargs["socket_connect_timeout"] = connect
    kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs.pop("retry_on_timeout", None)
    return cls, kwargs


class AsyncRoute:
    """Where the asyncio lock's calls for one key go (see ``redis_fence._route.Route``)."""

    def __init__(self, client: AsyncClient, key: KeyT, io_timeout: float) -> None:
        self.client = client
        self.key = key
        self.io_timeout = io_timeout
        self._moved: Target | None = None

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    async def _source(self, target: Target | None) -> tuple[Target | None, Any, dict[str, Any]]:
        """The server's address (None: the caller's one server), connection class, settings."""
        client = self.client
        if not isinstance(client, RedisCluster):
            pool = client.connection_pool
            return None, pool.connection_class, dict(pool.connection_kwargs)
        if not client.nodes_manager.slots_cache:
            # Never initialized: the first call of a new client. Afterwards the lock never
            # refreshes the table itself (through the caller's connections and timeouts).
            await within(self.io_timeout, client.initialize())
        target = target or self._moved
        if target is None:
            node = client.get_node_from_key(self.key)  # type: ignore[arg-type]
        else:
            node = client.get_node(host=target[0], port=target[1])
            if node is None:  # a node the table does not know yet: another node's settings
                known = client.get_nodes()
                if known:
                    kwargs = dict(known[0].connection_kwargs)
                    kwargs["host"], kwargs["port"] = target
                    return target, known[0].connection_class, kwargs
        if node is None:
            raise rx.ConnectionError(f"no known cluster node serves the key {self.key!r}")
        return (node.host, int(node.port)), node.connection_class, dict(node.connection_kwargs)

    async def client_for(self, target: Target | None = None) -> tuple[Redis, Target | None]:
        address, cls, kwargs = await self._source(target)
        loop = asyncio.get_running_loop()
        per_client = _derived.setdefault(self.client, {})
        key = (address, self.io_timeout, id(loop))
        entry = per_client.get(key)
        if entry is None or entry[0] is not loop:
            # Clients of event loops that have ended go (their connections died with them).
            for stale in [k for k, (other, _) in per_client.items() if other.is_closed()]:
                del per_client[stale]
            cls, kwargs = _settings(cls, kwargs, self.io_timeout, self.io_timeout)
            entry = (loop, Redis(connection_pool=ConnectionPool(connection_class=cls, **kwargs)))
            per_client[key] = entry
        return entry[1], address

    async def call(self, *args: Arg) -> Any:
        """One command, bounded by the I/O timeout, sent once; on a cluster follows ``MOVED``
        and ``ASK`` (``ASKING`` and the command in one round trip), twice at most."""
        ask: Target | None = None
        for attempt in range(3):
            try:
                client, _ = await self.client_for(ask)
                if ask is None:
                    return await within(self.io_timeout, _any(client).execute_command(*args))
                pipe = _any(client).pipeline(transaction=False)
                pipe.execute_command("ASKING")
                pipe.execute_command(*args)
                return (await within(self.io_timeout, pipe.execute()))[1]
            except (rx.AskError, rx.MovedError) as e:
                if not self.is_cluster or attempt == 2:
                    raise
                ask = await self.redirected(e)
            except (rx.ConnectionError, rx.TimeoutError):
                self._moved = None
                raise
            except asyncio.TimeoutError:
                self._moved = None
                raise rx.TimeoutError(
                    f"{args[0]!s} on {self.key!r}: no reply within {self.io_timeout} s"
                ) from None
        raise AssertionError("unreachable")

    async def redirected(self, e: rx.AskError) -> Target | None:
        target = (e.host, int(e.port))
        if not isinstance(e, rx.MovedError):  # (redis-py's MovedError is an AskError)
            return target
        self._moved = target
        with contextlib.suppress(Exception):
            told = _any(self.client).nodes_manager.move_slot(e)
            if inspect.isawaitable(told):
                await told
        return None

    async def call_quietly(self, *args: Arg, target: Target | None = None) -> Any | None:
        """One bounded call (on ``target`` when given), any error logged and swallowed."""
        try:
            if target is not None:
                client, _ = await self.client_for(target)
                return await within(self.io_timeout, _any(client).execute_command(*args))
            return await self.call(*args)
        except Exception as e:
            log.warning("redis-fence: %s on %r failed: %s", args[0], self.key, e)
            return None

    async def blocking_connection(
        self, ask: Target | None
    ) -> tuple[AbstractConnection, Target | None]:
        """A new connection of its own for one blocking call (its reads bounded by the
        caller), and the address of its server (None: the caller's one server)."""
        address, cls, kwargs = await self._source(ask)
        cls, kwargs = _settings(cls, kwargs, None, self.io_timeout)
        conn: AbstractConnection = _any(cls)(**kwargs)
        return conn, address
