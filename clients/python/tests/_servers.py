"""Real redis-server processes with the fence module loaded, for the tests of ``redis_fence``.

Every server runs on a free port of 127.0.0.1 in its own temporary directory, with no
persistence (``--save "" --appendonly no``) and ``--loadmodule $FENCE_MODULE``. A start waits,
up to a deadline, until the server answers as our own child (``INFO server``'s ``process_id``
is the pid we started: another process may have taken the port meanwhile), and starts again on
another port when the port turned out to be taken ("Address already in use").

    REDIS_SERVER  the server binary (default redis-server on PATH; a valkey-server works too)
    FENCE_MODULE  the module (default <repo>/target/debug/libredis_fence.so: cargo build first)
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[3]
# How long a started server may take to answer: a deadline, not a number of tries (a loaded
# machine makes every try slow).
START_TIMEOUT = 60.0
# How long replication or a cluster may take to settle.
SETTLE_TIMEOUT = 60.0
# How long a stopped server may take to exit after SIGTERM before it gets SIGKILL.
STOP_TIMEOUT = 10.0
START_ATTEMPTS = 5
LOG_TAIL_LINES = 40
SLOTS = 16384
# cluster-node-timeout: as the Rust harness (test-support/src/cluster.rs): long enough that a
# node starved of CPU by a loaded machine is not taken for dead.
CLUSTER_NODE_TIMEOUT_MS = 3000


class ServerError(RuntimeError):
    """A server that did not start, or replication or a cluster that did not settle."""


def server_binary() -> str:
    return os.environ.get("REDIS_SERVER") or "redis-server"


def module_path() -> Path:
    value = os.environ.get("FENCE_MODULE")
    return Path(value) if value else ROOT / "target" / "debug" / "libredis_fence.so"


def check_prerequisites() -> None:
    """Raises ServerError naming what is missing: the server binary or the built module."""
    binary = server_binary()
    if shutil.which(binary) is None:
        raise ServerError(
            f"the server binary {binary!r} is not found or not executable: install "
            "redis-server (make deps) or set REDIS_SERVER to a redis-server or valkey-server"
        )
    module = module_path()
    if not module.is_file():
        raise ServerError(
            f"the fence module is not at {module}: run `cargo build` at the repository root "
            "(or set FENCE_MODULE to the built libredis_fence.so)"
        )


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _read(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _unparsed(response: object, **options: object) -> object:
    return response


def raw_client(host: str, port: int, **kwargs: Any) -> redis.Redis:
    """The fixtures' own client: no retries (redis-py 8 retries a failed command 3 times with
    a backoff of seconds, which would hide a dead server and slow every poll), and ``INFO``
    replies as the server's text, not redis-py's parse of it (which turns values into numbers,
    differently between versions)."""
    kwargs.setdefault("retry", Retry(NoBackoff(), 0))
    kwargs.setdefault("socket_timeout", 30)
    kwargs.setdefault("socket_connect_timeout", 10)
    c = redis.Redis(host=host, port=port, **kwargs)
    c.set_response_callback("INFO", _unparsed)
    return c


def info_fields(reply: object) -> dict[str, str]:
    """An ``INFO`` (or ``CLUSTER INFO``) reply's ``key:value`` lines."""
    if isinstance(reply, bytes):
        text = reply.decode(errors="replace")
    elif isinstance(reply, str):
        text = reply
    else:
        raise TypeError(f"unexpected INFO reply {reply!r}")
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and not key.startswith("#"):
            fields[key] = value
    return fields


def wait_for(
    what: str,
    check: Callable[[], str | None],
    timeout: float = SETTLE_TIMEOUT,
    logs: Callable[[], str] = lambda: "",
) -> None:
    """Calls ``check`` until it returns None (done) or ``timeout`` passes; ``check`` returns why
    it is not done yet, which the error repeats (with ``logs()``)."""
    deadline = time.monotonic() + timeout
    reason: str | None = "not checked yet"
    while True:
        try:
            reason = check()
        except (redis.RedisError, OSError) as e:
            reason = f"{type(e).__name__}: {e}"
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise ServerError(f"{what}: not done within {timeout:.0f} s: {reason}\n{logs()}")
        time.sleep(0.02)


class Server:
    """A redis-server child process with the module loaded; see the module's docstring."""

    host: str
    port: int
    pid: int
    dir: Path
    args: tuple[str, ...]

    def __init__(self, extra_args: Sequence[str] = (), *, start_timeout: float = START_TIMEOUT):
        check_prerequisites()
        self.host = HOST
        self.args = tuple(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="redis-fence-py-"))
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._start(start_timeout)
        except BaseException:
            self._cleanup_dir()
            raise

    # -- starting --------------------------------------------------------------------------

    def _command(self, port: int) -> list[str]:
        return [
            server_binary(),
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
            "--loadmodule",
            str(module_path()),
            *self.args,
        ]

    def _start(self, timeout: float) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            with open(self.dir / "stdio.log", "ab") as stdio:
                try:
                    proc = subprocess.Popen(
                        self._command(port),
                        cwd=self.dir,
                        stdin=subprocess.DEVNULL,
                        stdout=stdio,
                        stderr=subprocess.STDOUT,
                    )
                except OSError as e:
                    raise ServerError(
                        f"cannot run {server_binary()!r} (set REDIS_SERVER): {e}"
                    ) from e
            self._proc, self.port, self.pid = proc, port, proc.pid
            _live.add(self)
            outcome = self._wait_ready(proc, timeout)
            if outcome == "ready":
                return
            self.kill()
            if outcome == "port taken" and attempt < START_ATTEMPTS:
                continue
            why = {
                "exited": f"exited with status {proc.returncode}",
                "timeout": f"did not answer as our child within {timeout:.0f} s",
                "port taken": f"found no free port in {START_ATTEMPTS} attempts",
            }[outcome]
            raise ServerError(
                f"{server_binary()} {' '.join(self.args)} (module {module_path()}) {why}; "
                f"its log (tail), in {self.dir}:\n{self.log_tail()}"
            )

    def _log_size(self, name: str) -> int:
        try:
            return (self.dir / name).stat().st_size
        except OSError:
            return 0

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> str:
        # Only what this launch writes counts (the logs go on across attempts).
        log_start = {name: self._log_size(name) for name in ("redis.log", "stdio.log")}
        deadline = time.monotonic() + timeout
        with raw_client(HOST, self.port, socket_connect_timeout=1, socket_timeout=5) as c:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    new_log = "".join(_read(self.dir / n, at) for n, at in log_start.items())
                    return "port taken" if "Address already in use" in new_log else "exited"
                try:
                    info = info_fields(c.execute_command("INFO", "server", "persistence"))
                except (redis.RedisError, OSError):
                    info = {}
                # Our own child (not a process that took the port meanwhile), its data loaded
                # (until then it answers LOADING).
                if info.get("process_id") == str(proc.pid) and info.get("loading") == "0":
                    return "ready"
                time.sleep(0.02)
        return "timeout"

    # -- use ---------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` on this server (replies as bytes unless told otherwise)."""
        kwargs.setdefault("socket_timeout", 30)
        kwargs.setdefault("socket_connect_timeout", 10)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def info(self, *sections: str) -> dict[str, str]:
        """``INFO sections`` as text fields, as the server wrote them."""
        with raw_client(self.host, self.port) as c:
            return info_fields(c.execute_command("INFO", *sections))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log (and of its stdout/stderr, if anything)."""
        text = _tail(self.dir / "redis.log", lines)
        stdio = _tail(self.dir / "stdio.log", lines)
        if stdio.strip():
            text += "\n--- stdout/stderr ---\n" + stdio
        return text

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited ({self.returncode()})"
        return f"{server_binary()} pid {self.pid} on {self.address}, {state}, dir {self.dir}"

    # -- process control ---------------------------------------------------------------------

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def _signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def sigstop(self) -> None:
        """SIGSTOP: the server stops answering (connections stay open) until sigcont()."""
        self._signal(signal.SIGSTOP)

    def sigcont(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, then waits for the exit."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._reap()
        _live.discard(self)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (after SIGCONT, should it be stopped) and waits; SIGKILL after ``timeout``."""
        if self._proc is not None and self._proc.poll() is None:
            self.sigcont()
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()
        _live.discard(self)

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def _cleanup_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        """Kills the server and removes its directory (teardown)."""
        self.kill()
        self._cleanup_dir()

    def __repr__(self) -> str:
        return f"<Server {self.describe()}>"


# Every server not yet killed, for the exit of a run that ended without teardown (pytest
# stopped by an internal error): none outlives the interpreter.
_live: set[Server] = set()


@atexit.register
def _kill_leftovers() -> None:
    for s in list(_live):
        s.close()


# -- replication --------------------------------------------------------------------------------


def replicate(replica: Server, master: Server) -> None:
    """``REPLICAOF master`` on ``replica``, then waits until it is in sync."""
    with raw_client(replica.host, replica.port) as c:
        c.execute_command("REPLICAOF", master.host, str(master.port))
    wait_in_sync(master, replica)


def wait_in_sync(master: Server, replica: Server, timeout: float = SETTLE_TIMEOUT) -> None:
    """Waits until ``replica``'s link to ``master`` is up and it has processed everything the
    master has sent (equal ``master_repl_offset``), as test-support/src/replication.rs."""

    def link() -> str | None:
        r = replica.info("replication")
        if r.get("role") != "slave":
            return f"role is {r.get('role')}"
        if r.get("master_port") != str(master.port):
            return f"follows port {r.get('master_port')}"
        if r.get("master_link_status") != "up":
            return f"master_link_status:{r.get('master_link_status')}"
        if r.get("master_sync_in_progress") not in (None, "0"):
            return "sync in progress"
        return None

    logs = lambda: _logs({"master": master, "replica": replica})  # noqa: E731
    wait_for("the replica's link to its master", link, timeout, logs)
    # Right after a diskless full sync, Redis 7.0 buffers the stream until the replica's first
    # acknowledgement while both offsets already match: WAIT asks for that acknowledgement.
    with raw_client(master.host, master.port, socket_timeout=timeout + 30) as c:
        c.execute_command("WAIT", "1", str(int(timeout * 1000)))

    def caught_up() -> str | None:
        m = master.info("replication").get("master_repl_offset")
        r = replica.info("replication").get("master_repl_offset")
        return None if m is not None and m == r else f"master offset {m}, replica offset {r}"

    wait_for("the replica catching up", caught_up, timeout, logs)


def promote(replica: Server) -> None:
    """``REPLICAOF NO ONE``: the replica becomes a master (keeping its data)."""
    with raw_client(replica.host, replica.port) as c:
        c.execute_command("REPLICAOF", "NO", "ONE")

    def is_master() -> str | None:
        role = replica.info("replication").get("role")
        return None if role == "master" else f"role is {role}"

    wait_for("the promotion", is_master, logs=lambda: _logs({"promoted": replica}))


def demote(old_master: Server, new_master: Server) -> None:
    """Makes ``old_master`` a replica of ``new_master`` and waits until it is in sync."""
    replicate(old_master, new_master)


class ReplicaPair:
    """A master and its replica (``REPLICAOF``), in sync when handed out."""

    def __init__(self, master: Server, replica: Server):
        self.master = master
        self.replica = replica

    @classmethod
    def start(cls, extra_args: Sequence[str] = ()) -> ReplicaPair:
        # The replica's first full sync starts at once: disk-based (a diskless one waits for
        # the master's once-a-second replication cron, up to 1 s, even with no delay), and
        # should a test turn diskless on, without the default 5 s wait for more replicas.
        args = ["--repl-diskless-sync", "no", "--repl-diskless-sync-delay", "0", *extra_args]
        master = Server(args)
        try:
            replica = Server(args)
        except BaseException:
            master.close()
            raise
        pair = cls(master, replica)
        try:
            replicate(replica, master)
        except BaseException:
            pair.close()
            raise
        return pair

    def wait_in_sync(self, timeout: float = SETTLE_TIMEOUT) -> None:
        wait_in_sync(self.master, self.replica, timeout)

    def promote_replica(self) -> None:
        """``REPLICAOF NO ONE`` on the replica; the old master is left as it is (still a master,
        as after a network split) until ``demote_old_master``. ``master`` and ``replica`` are
        not swapped: see ``failover``."""
        promote(self.replica)

    def demote_old_master(self) -> None:
        """Makes the old master a replica of the promoted one and swaps the roles, so that
        ``master`` is the promoted server and ``replica`` the old master, in sync."""
        demote(self.master, self.replica)
        self.master, self.replica = self.replica, self.master

    def failover(self) -> None:
        """Both steps: promote the replica, demote the old master under it."""
        self.promote_replica()
        self.demote_old_master()

    def servers(self) -> dict[str, Server]:
        return {"master": self.master, "replica": self.replica}

    def close(self) -> None:
        for s in (self.master, self.replica):
            s.close()


# -- cluster ------------------------------------------------------------------------------------


def cluster_node_args(extra_args: Sequence[str] = ()) -> list[str]:
    """A cluster node's arguments, those of test-support/src/cluster.rs's start_node."""
    return [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        str(CLUSTER_NODE_TIMEOUT_MS),
        # Explicit: port + 10000 may not exist for a port of the ephemeral range.
        "--cluster-port",
        str(free_port()),
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
        *extra_args,
    ]


class Cluster:
    """Masters (no replicas) of a Redis Cluster with the module, each serving an equal share of
    the slots; every node agrees on the slots and says ``cluster_state:ok`` when handed out."""

    def __init__(self, nodes: list[Server]):
        self.nodes = nodes
        self.ranges: list[tuple[int, int]] = []

    @classmethod
    def start(cls, masters: int = 3, extra_args: Sequence[str] = ()) -> Cluster:
        nodes: list[Server] = []
        cluster = cls(nodes)
        try:
            for _ in range(masters):
                nodes.append(Server(cluster_node_args(extra_args)))
            cluster._join()
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _join(self) -> None:
        n = len(self.nodes)
        self.ranges = [(SLOTS * i // n, SLOTS * (i + 1) // n - 1) for i in range(n)]
        for i, (node, (first, last)) in enumerate(zip(self.nodes, self.ranges, strict=True)):
            with raw_client(node.host, node.port) as c:
                # Distinct config epochs from the start, as redis-cli --cluster create does
                # (equal ones would be settled by a collision round first).
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", str(i + 1))
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
        for i, node in enumerate(self.nodes):
            with raw_client(node.host, node.port) as c:
                for other in self.nodes[i + 1 :]:
                    # The bus port too: it is not port + 10000 here.
                    bus = other.args[other.args.index("--cluster-port") + 1]
                    c.execute_command("CLUSTER", "MEET", other.host, str(other.port), bus)
        self.wait_ok()

    def wait_ok(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Waits until every node says cluster_state:ok, knows every node and agrees on which
        node serves which slots."""
        expected = sorted(
            (first, last, node.port)
            for node, (first, last) in zip(self.nodes, self.ranges, strict=True)
        )

        def agreed() -> str | None:
            for node in self.nodes:
                with raw_client(node.host, node.port) as c:
                    info = info_fields(c.execute_command("CLUSTER", "INFO"))
                    if info.get("cluster_state") != "ok":
                        return f"{node.address}: cluster_state:{info.get('cluster_state')}"
                    if info.get("cluster_known_nodes") != str(len(self.nodes)):
                        return f"{node.address} knows {info.get('cluster_known_nodes')} nodes"
                    slots = sorted(
                        (int(entry[0]), int(entry[1]), int(entry[2][1]))
                        for entry in c.execute_command("CLUSTER", "SLOTS")
                    )
                if slots != expected:
                    return f"{node.address} sees slots {slots}, not {expected}"
            return None

        wait_for("the cluster", agreed, timeout, self.log_tails)

    @property
    def masters(self) -> list[Server]:
        return list(self.nodes)

    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(n.host, n.port) for n in self.nodes]

    def node_for_slot(self, slot: int) -> Server:
        for node, (first, last) in zip(self.nodes, self.ranges, strict=True):
            if first <= slot <= last:
                return node
        raise ValueError(f"slot {slot} out of range")

    def flushall(self) -> None:
        for node in self.nodes:
            with raw_client(node.host, node.port) as c:
                c.execute_command("FLUSHALL")

    def reset(self) -> None:
        """Kills every client connection (leftovers of earlier tests) and empties every node."""
        for node in self.nodes:
            with raw_client(node.host, node.port) as c:
                c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                c.execute_command("CLIENT", "KILL", "TYPE", "pubsub", "SKIPME", "yes")
                c.execute_command("FLUSHALL")

    def servers(self) -> dict[str, Server]:
        return {f"node {i}": node for i, node in enumerate(self.nodes)}

    def log_tails(self) -> str:
        return _logs(self.servers())

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _logs(servers: dict[str, Server]) -> str:
    return "\n".join(
        f"--- {name}: {s.describe()} (log tail) ---\n{s.log_tail()}" for name, s in servers.items()
    )


def servers_of(value: object) -> Iterator[tuple[str, Server]]:
    """The servers a fixture value stands for (a Server, a ReplicaPair, a Cluster, a factory)."""
    if isinstance(value, Server):
        yield "server", value
    elif isinstance(value, (ReplicaPair, Cluster)):
        yield from value.servers().items()
    else:
        started = getattr(value, "started", None)
        if isinstance(started, list):
            for i, s in enumerate(started):
                if isinstance(s, Server):
                    yield f"factory server {i}", s


def logs_of(servers: dict[str, Server]) -> str:
    return _logs(servers)
