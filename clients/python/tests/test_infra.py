"""Smoke tests of the fixtures (conftest.py, _servers.py), with raw commands only."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio
from _servers import ReplicaPair, Server, ServerError
from conftest import ServerFactory
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry


def test_standalone_lock_acquire(r: redis.Redis, server: Server) -> None:
    token = r.execute_command("LOCK.ACQUIRE", "infra:lock", "worker-1", "30000")
    assert isinstance(token, int) and token > 0
    status = server.info("server")
    assert status["process_id"] == str(server.pid)
    assert server.alive() and server.dir.is_dir()


def test_r_starts_empty(r: redis.Redis) -> None:
    assert r.execute_command("DBSIZE") == 0
    r.execute_command("STOCK.SET", "infra:stock", "5")
    assert r.execute_command("STOCK.GET", "infra:stock") == 5


def test_asyncio_client_on_the_same_server(server: Server) -> None:
    async def main() -> object:
        client = redis.asyncio.Redis(host=server.host, port=server.port)
        try:
            await client.execute_command("STOCK.SET", "infra:async", "3")
            return await client.execute_command("STOCK.GET", "infra:async")
        finally:
            await client.aclose()

    assert asyncio.run(main()) == 3


def test_factory_server_sigstop_and_kill(server_factory: ServerFactory) -> None:
    s = server_factory("--hz", "1")
    c = s.client(socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    assert c.execute_command("PING") is True
    s.sigstop()
    with pytest.raises(redis.TimeoutError):
        c.execute_command("PING")
    s.sigcont()
    c.close()
    assert s.client().execute_command("CONFIG", "GET", "hz") == {b"hz": b"1"}
    s.kill()
    assert not s.alive()
    assert "Ready to accept connections" in s.log_tail(1000)


def test_a_bad_argument_is_reported_with_the_log(server_factory: ServerFactory) -> None:
    with pytest.raises(ServerError) as failure:
        server_factory("--no-such-option", "yes")
    assert "exited" in str(failure.value)
    assert "no-such-option" in str(failure.value)


def test_replica_sees_stock_set(replica_pair: ReplicaPair) -> None:
    m = replica_pair.master.client()
    m.execute_command("STOCK.SET", "infra:stock", "7")
    replica_pair.wait_in_sync()
    rep = replica_pair.replica.client()
    assert rep.execute_command("STOCK.GET", "infra:stock") == 7


def test_failover_swaps_the_roles(replica_pair: ReplicaPair) -> None:
    old_master, old_replica = replica_pair.master, replica_pair.replica
    old_master.client().execute_command("STOCK.SET", "infra:stock", "4")
    replica_pair.wait_in_sync()
    replica_pair.failover()
    assert replica_pair.master is old_replica and replica_pair.replica is old_master
    assert replica_pair.master.info("replication")["role"] == "master"
    assert replica_pair.replica.info("replication")["master_link_status"] == "up"
    replica_pair.master.client().execute_command("STOCK.DEDUCT", "infra:stock", "1", "ID", "o1")
    replica_pair.wait_in_sync()
    assert replica_pair.replica.client().execute_command("STOCK.GET", "infra:stock") == 3


def test_cluster_routes_keys_in_different_slots(rc: RedisCluster) -> None:
    keys = [f"infra:{i}" for i in range(12)]
    slots = {rc.keyslot(k) for k in keys}
    nodes = {rc.get_node_from_key(k).name for k in keys}
    assert len(slots) > 1 and len(nodes) == 3, (slots, nodes)
    for i, key in enumerate(keys):
        rc.execute_command("STOCK.SET", key, str(i + 1))
    for i, key in enumerate(keys):
        assert rc.execute_command("STOCK.GET", key) == i + 1


def test_cluster_cart(rc: RedisCluster) -> None:
    rc.execute_command("STOCK.SET", "{t}:a", "5")
    rc.execute_command("STOCK.SET", "{t}:b", "5")
    reply = rc.execute_command("STOCK.CART", "2", "{t}:a", "1", "{t}:b", "1", "ID", "x")
    assert reply, reply
    assert rc.execute_command("STOCK.GET", "{t}:a") == 4
    assert rc.execute_command("STOCK.GET", "{t}:b") == 4


def test_cluster_starts_empty(rc: RedisCluster) -> None:
    assert rc.execute_command("STOCK.GET", "{t}:a") is None
