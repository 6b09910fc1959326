"""Bounded calls for the sync lock: a private client per server, with the caller's settings
(address, password, TLS, protocol) but its own timeouts and no retries, so no lock call can
hang on a dead socket, whatever timeouts (or none) the caller's client has.

On Redis Cluster the server is the master of the key's slot, found in the caller's
``RedisCluster`` slot table, or the node a ``MOVED``/``ASK`` named; the table itself is never
refreshed from here (see ``Route``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from typing import Any, Union

import redis
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import AbstractConnection, ConnectionPool
from redis.retry import Retry

from ._protocol import Arg, KeyT

log = logging.getLogger("redis_fence")

SyncClient = Union["redis.Redis", "RedisCluster"]

# Derived clients, per (caller's pool, timeout): made once, freed with the pool.
_derived: weakref.WeakKeyDictionary[ConnectionPool, dict[float, redis.Redis]] = (
    weakref.WeakKeyDictionary()
)
_derived_guard = threading.Lock()


def _kwargs(
    pool: ConnectionPool, socket_timeout: float | None, connect_timeout: float, retries: int
) -> dict[str, Any]:
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = socket_timeout
    kwargs["socket_connect_timeout"] = connect_timeout
    kwargs["retry"] = Retry(NoBackoff(), retries)
    kwargs.pop("retry_on_timeout", None)
    return kwargs


def bounded_client(pool: ConnectionPool, io_timeout: float) -> redis.Redis:
    """A client on ``pool``'s server whose every connect, command and reply is bounded by
    ``io_timeout``, without retries (the lock decides what it sends again)."""
    with _derived_guard:
        per_pool = _derived.setdefault(pool, {})
        client = per_pool.get(io_timeout)
        if client is None:
            derived = ConnectionPool(
                connection_class=pool.connection_class,
                **_kwargs(pool, io_timeout, io_timeout, 0),
            )
            client = redis.Redis(connection_pool=derived)
            per_pool[io_timeout] = client
        return client


class Route:
    """Where the calls for one key go. On a cluster: the master of the key's slot in the
    caller's slot table, or the node a ``MOVED``/``ASK`` named. The slot table is never
    refreshed from here (that would go through the caller's connections and timeouts): a
    ``MOVED`` is followed at once and told to the table, which redis-py applies lazily."""

    def __init__(self, client: SyncClient, key: KeyT, io_timeout: float) -> None:
        self.client = client
        self.key = key
        self.io_timeout = io_timeout
        self._moved: tuple[str, int] | None = None

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def pool(self, ask: tuple[str, int] | None = None) -> ConnectionPool:
        """The pool of the node for the key (or the one an ``ASK`` named)."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return client.connection_pool
        target = ask or self._moved
        if target is None:
            node = _any(client).get_node_from_key(self.key)
        else:
            node = _any(client).get_node(host=target[0], port=target[1])
            if node is None:  # a node the table does not know yet (a MOVED or ASK to it)
                node = _any(ClusterNode)(target[0], target[1])
        if node is None:
            raise rx.ConnectionError(f"no known cluster node serves the key {self.key!r}")
        # Made without I/O when the table has the node but no client for it yet.
        pool: ConnectionPool = _any(client).get_redis_connection(node).connection_pool
        return pool

    def call(self, *args: Arg) -> Any:
        """One command, bounded by the I/O timeout, sent once; on a cluster follows ``MOVED``
        and ``ASK`` (``ASKING`` and the command in one round trip), twice at most."""
        ask: tuple[str, int] | None = None
        for attempt in range(3):
            try:
                client = _any(bounded_client(self.pool(ask), self.io_timeout))
                if ask is None:
                    return client.execute_command(*args)
                pipe = client.pipeline(transaction=False)
                pipe.execute_command("ASKING")
                pipe.execute_command(*args)
                return pipe.execute()[1]
            except (rx.AskError, rx.MovedError) as e:
                if not self.is_cluster or attempt == 2:
                    raise
                ask = self.redirected(e)
            except (rx.ConnectionError, rx.TimeoutError):
                self._moved = None  # back to the slot table, which the caller's client refreshes
                raise
        raise AssertionError("unreachable")

    def redirected(self, e: rx.AskError | rx.MovedError) -> tuple[str, int] | None:
        """Where to send next after a redirection: the ``ASK`` target for one call, or the
        ``MOVED`` target from now on (None: the key's node, now the moved one)."""
        target = (e.host, int(e.port))
        if not isinstance(e, rx.MovedError):  # (redis-py's MovedError is an AskError)
            return target
        self._moved = target
        with contextlib.suppress(Exception):
            _any(self.client).nodes_manager.move_slot(e)
        return None

    def call_quietly(self, *args: Arg, pool: ConnectionPool | None = None) -> Any | None:
        """``call`` (or one bounded call on ``pool``'s server), with any error logged and
        swallowed: a clean-up on the way out."""
        try:
            if pool is not None:
                return _any(bounded_client(pool, self.io_timeout)).execute_command(*args)
            return self.call(*args)
        except Exception as e:
            log.warning("redis-fence: %s on %r failed: %s", args[0], self.key, e)
            return None

    def blocking_connection(
        self, ask: tuple[str, int] | None
    ) -> tuple[AbstractConnection, ConnectionPool]:
        """A new connection of its own for one blocking call. Its connect and every read are
        bounded by the I/O timeout; the blocking reply is read with a timeout of its own."""
        pool = self.pool(ask)
        kwargs = _kwargs(pool, self.io_timeout, self.io_timeout, 0)
        conn: AbstractConnection = pool.connection_class(**kwargs)
        return conn, pool


# Replies after which a call sent straight to the key's node is sent again through the
# cluster client, which follows them (slot table refresh, ASK, retries) as for any command.
REDIRECTS = (
    rx.MovedError,
    rx.AskError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.ConnectionError,
    rx.TimeoutError,
)


def run_keyed(client: SyncClient, key: KeyT, args: list[Arg]) -> Any:
    """One command for ``key``. On a cluster it goes straight to the master of the key's slot:
    redis-py would otherwise ask a node ``COMMAND GETKEYS`` before every command whose key
    list is variable (``EVENTS``, carts), two round trips more. Redirected or cut off, the
    call goes again through the cluster client."""
    if isinstance(client, RedisCluster):
        node = _any(client).get_node_from_key(key)
        if node is not None and node.redis_connection is not None:
            try:
                return _any(node.redis_connection).execute_command(*args)
            except REDIRECTS:
                pass
    return _any(client).execute_command(*args)


def pipeline_on(conn: AbstractConnection, commands: list[list[Arg]]) -> None:
    c = _any(conn)
    c.send_packed_command(c.pack_commands(commands))


def _any(value: object) -> Any:
    """redis-py's untyped methods, called from typed code."""
    return value
