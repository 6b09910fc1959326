"""pytest fixtures: real redis-server processes with the fence module (see _servers.py).

    server          session: one standalone server
    r               a redis.Redis on `server` (bytes replies), after FLUSHALL and after killing
                    every other client connection (leftovers of earlier tests)
    server_factory  server_factory("--hz", "1", ...) starts extra servers, all killed after the
                    test (free to SIGSTOP, SIGKILL, ...)
    replica_pair    a master and its replica, in sync; .failover(), .promote_replica(), ...
    cluster         session: a Redis Cluster of 3 masters, every node agreeing, cluster_state:ok
    rc              a redis.cluster.RedisCluster on `cluster`, after FLUSHALL and the killing of
                    leftover client connections on every master

REDIS_SERVER picks the server binary, FENCE_MODULE the module. Tests that use `cluster`/`rc` are
marked `cluster`, those that use `replica_pair` `replication` (e.g. `-m "not cluster"` while
working). With CI set, a skipped test fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import pytest
import redis
from _servers import (
    Cluster,
    ReplicaPair,
    Server,
    ServerError,
    logs_of,
    server_binary,
    servers_of,
)
from redis.cluster import ClusterNode, RedisCluster

__all__ = ["ServerFactory"]


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: uses the Redis Cluster (fixtures cluster, rc)")
    config.addinivalue_line("markers", "replication: uses a master and a replica")
    config.addinivalue_line("markers", "slow: takes seconds (still part of make test)")


def pytest_report_header(config: pytest.Config) -> str:
    from _servers import module_path

    return f"redis-fence: REDIS_SERVER={server_binary()} FENCE_MODULE={module_path()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"cluster", "rc"}:
            item.add_marker(pytest.mark.cluster)
        if "replica_pair" in names:
            item.add_marker(pytest.mark.replication)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report ends with the log tails of the servers it used."""
    report = yield
    if report.failed and call.when in ("call", "teardown"):
        servers: dict[str, Server] = {}
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        for fixture, value in funcargs.items():
            for name, s in servers_of(value):
                servers.setdefault(f"{fixture}: {name}", s)
        if servers:
            report.sections.append(("server logs (tail)", logs_of(servers)))
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With CI set, nothing is skipped silently: a skipped test fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if _ci() and skipped and session.exitstatus == pytest.ExitCode.OK:
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(
                f"redis-fence: CI is set and {len(skipped)} test(s) were skipped "
                "(see the short summary): failing the run",
                red=True,
                bold=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- standalone -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def r(server: Server) -> Iterator[redis.Redis]:
    if not server.alive():
        raise ServerError(
            f"the session server is gone ({server.describe()}); a test that kills or stops a "
            f"server should start its own with server_factory. Log:\n{server.log_tail()}"
        )
    client = server.client()
    # Every test starts on a clean server: no connection left by an earlier test (a waiter
    # still blocked in LOCK.ACQUIRE ... WAIT, a watchdog, a subscriber), no key. Fixtures that
    # open connections of their own depend on `r`, so that they come after this.
    client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    client.execute_command("CLIENT", "KILL", "TYPE", "pubsub", "SKIPME", "yes")
    client.execute_command("FLUSHALL")
    yield client
    client.close()


class ServerFactory:
    """Starts servers for one test: ``server_factory("--hz", "1")``; each is killed and its
    directory removed when the test ends."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def __call__(self, *extra_args: str) -> Server:
        s = Server(extra_args)
        self.started.append(s)
        return s

    def replica_pair(self, extra_args: Sequence[str] = ()) -> ReplicaPair:
        pair = ReplicaPair.start(extra_args)
        self.started += [pair.master, pair.replica]
        return pair

    def cluster(self, masters: int = 3, extra_args: Sequence[str] = ()) -> Cluster:
        c = Cluster.start(masters, extra_args)
        self.started += c.nodes
        return c

    def close(self) -> None:
        for s in self.started:
            s.close()


@pytest.fixture
def server_factory() -> Iterator[ServerFactory]:
    factory = ServerFactory()
    yield factory
    factory.close()


# -- replication ----------------------------------------------------------------------------


@pytest.fixture
def replica_pair() -> Iterator[ReplicaPair]:
    pair = ReplicaPair.start()
    yield pair
    pair.close()


# -- cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    c = Cluster.start(3)
    yield c
    c.close()


@pytest.fixture
def rc(cluster: Cluster) -> Iterator[RedisCluster]:
    gone = [s.describe() for s in cluster.nodes if not s.alive()]
    if gone:
        raise ServerError(
            f"cluster nodes are gone: {gone}; a test that kills or stops nodes should start "
            f"its own cluster with server_factory.cluster(). Logs:\n{cluster.log_tails()}"
        )
    cluster.reset()
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.startup_nodes()],
        decode_responses=False,
        socket_timeout=30,
        socket_connect_timeout=10,
    )
    yield client
    client.close()
