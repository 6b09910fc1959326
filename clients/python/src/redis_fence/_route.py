"""Bounded calls for the sync lock: a private client per server, with the caller's settings
(address, password, TLS, protocol) but its own timeouts, so no lock call can hang on a dead
socket, whatever timeouts (or none) the caller's client has.

On Redis Cluster the server is the master of the key's slot, found in the caller's
``RedisCluster`` slot table; a ``MOVED``/``ASK`` reply, or a connection error, refreshes that
table before the next call.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Union

import redis
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
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
    ``io_timeout`` (one retry on a connection error or timeout)."""
    with _derived_guard:
        per_pool = _derived.setdefault(pool, {})
        client = per_pool.get(io_timeout)
        if client is None:
            derived = ConnectionPool(
                connection_class=pool.connection_class,
                **_kwargs(pool, io_timeout, io_timeout, 1),
            )
            client = redis.Redis(connection_pool=derived)
            per_pool[io_timeout] = client
        return client


class Route:
    """Where the calls for one key go."""

    def __init__(self, client: SyncClient, key: KeyT, io_timeout: float) -> None:
        self.client = client
        self.key = key
        self.io_timeout = io_timeout
        self._refresh = False

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def pool(self, ask: tuple[str, int] | None = None) -> ConnectionPool:
        """The pool of the master of the key's slot, or of the node an ``ASK`` named."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return client.connection_pool
        if self._refresh:
            self._refresh = False
            client.nodes_manager.initialize()
        for _ in range(2):
            if ask is None:
                node = _any(client).get_node_from_key(self.key)
            else:
                node = _any(client).get_node(host=ask[0], port=ask[1])
            if node is not None and node.redis_connection is not None:
                pool: ConnectionPool = node.redis_connection.connection_pool
                return pool
            client.nodes_manager.initialize()
        raise rx.ConnectionError(f"no cluster node serves the key {self.key!r}")

    def call(self, *args: Arg) -> Any:
        """One command, bounded; on a cluster follows ``MOVED`` (slot table refreshed) and
        ``ASK`` (``ASKING`` and the command to the node named, in one round trip), twice at
        most."""
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
            except rx.AskError as e:
                if not self.is_cluster or attempt == 2:
                    raise
                ask = (e.host, int(e.port))
            except rx.MovedError:
                if not self.is_cluster or attempt == 2:
                    raise
                self._refresh = True
                ask = None
            except (rx.ConnectionError, rx.TimeoutError):
                if self.is_cluster:
                    self._refresh = True
                raise
        raise AssertionError("unreachable")

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

    def note_error(self, error: BaseException) -> None:
        if self.is_cluster and isinstance(
            error, (rx.MovedError, rx.ConnectionError, rx.TimeoutError)
        ):
            self._refresh = True


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
