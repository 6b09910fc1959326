#!/usr/bin/env python3
"""A lock's fencing token guarding a resource outside Redis: a row of an SQLite database.

A lock alone cannot protect a database: a worker that holds it may pause (a GC pause, a
swapped-out VM, a slow disk) past its lease, another worker takes the lock meanwhile, and the
first one wakes up and writes as if it still held it. With redis-fence every grant carries a
token that only rises, and the row keeps the highest token that wrote it:

    UPDATE stock SET stock = stock - ?, fence = ?
     WHERE id = ? AND fence <= ? AND stock >= ?      -- the token as the fence

so the database itself refuses (rowcount 0) the write of a holder whose lock was taken over.

The story, played deterministically with events rather than racing timers: worker A takes
Lock(r, "{sku:1}:lock", ttl=short) and pauses (waits on a threading.Event) until LOCK.STATUS
shows its lease over; worker B takes the lock (a larger token) and writes; A wakes up, writes
with its old token and is refused by the database; the row shows B's write only, and A's
release reports the lock lost (LockLost).

Exits 0 when A's late write was refused as expected, 1 otherwise, 2 when the server cannot be
used (not reachable, or without the fence module).

    python3 fenced_sqlite.py [--host HOST] [--port PORT] [--key KEY] [--ttl-ms MS] [--db PATH]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time

try:
    import redis
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("fenced_sqlite.py needs redis-py: python3 -m pip install redis")
try:
    from redis_fence import Lock, LockLost
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit(
        "fenced_sqlite.py needs the redis_fence package: python3 -m pip install ./clients/python"
    )

SKU = "sku:1"
INITIAL = 100
A_TAKES = 5
B_TAKES = 3
# How long a step may take before the story is declared stuck (never reached on a sane run).
STEP_TIMEOUT = 30.0


def parse_args() -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument(
        "--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379"))
    )
    p.add_argument("--key", default="{sku:1}:lock", help="the lock's key")
    p.add_argument("--ttl-ms", type=int, default=200, help="worker A's lease, in ms")
    p.add_argument("--db", help="the SQLite file (default: a temporary one)")
    args = p.parse_args()
    if args.ttl_ms < 1:
        p.error("--ttl-ms must be at least 1")
    return args


def say(line: str) -> None:
    print(line, flush=True)


def create_table(path: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS stock (id TEXT PRIMARY KEY, stock INTEGER, fence INTEGER)"
        )
        db.execute(
            "INSERT INTO stock (id, stock, fence) VALUES (?, ?, 0) "
            "ON CONFLICT (id) DO UPDATE SET stock = excluded.stock, fence = 0",
            (SKU, INITIAL),
        )
    db.close()


def fenced_take(path: str, quantity: int, token: int) -> int:
    """Takes ``quantity`` units if ``token`` is not below the row's fence (and the stock
    suffices): the number of rows changed, 1 or 0 (refused)."""
    db = sqlite3.connect(path)
    try:
        with db:  # one transaction, committed on the way out
            cur = db.execute(
                "UPDATE stock SET stock = stock - ?, fence = ? "
                "WHERE id = ? AND fence <= ? AND stock >= ?",
                (quantity, token, SKU, token, quantity),
            )
            return cur.rowcount
    finally:
        db.close()


def read_row(path: str) -> tuple[int, int]:
    db = sqlite3.connect(path)
    try:
        row = db.execute(
            "SELECT stock, fence FROM stock WHERE id = ?", (SKU,)
        ).fetchone()
        return int(row[0]), int(row[1])
    finally:
        db.close()


class Story:
    """What the workers did, and the events that order their steps."""

    def __init__(self) -> None:
        self.a_paused = threading.Event()  # A holds the lock and has paused
        self.a_resume = threading.Event()  # the coordinator wakes A up
        self.token_a: int | None = None
        self.token_b: int | None = None
        self.a_rows: int | None = None  # what A's late write changed
        self.b_rows: int | None = None
        self.a_lost: LockLost | None = None
        self.errors: list[str] = []


def worker_a(r: redis.Redis, args: argparse.Namespace, path: str, story: Story) -> None:
    lock = Lock(r, args.key, owner="worker-A", ttl=args.ttl_ms / 1000)
    try:
        with lock as token:
            story.token_a = token
            say(
                f"A: acquired {args.key} with token {token}, a lease of {args.ttl_ms} ms"
            )
            lock.check()  # the lease is fine now: A goes ahead with its write...
            say(
                "A: checked its lease, about to write ... and pauses (a GC pause, a stalled VM)"
            )
            story.a_paused.set()
            if not story.a_resume.wait(STEP_TIMEOUT):
                story.errors.append("A was never woken up")
                return
            say(
                f"A: wakes up and writes {A_TAKES} units with its token {token}, unaware"
            )
            story.a_rows = fenced_take(path, A_TAKES, token)
            if story.a_rows == 0:
                _, fence = read_row(path)
                say(
                    f"A: the database refused the write (rowcount 0): the row's fence {fence} "
                    "is above A's token, a newer holder has written"
                )
            else:
                say(f"A: the write went through (rowcount {story.a_rows})")
    except LockLost as e:  # raised by the release at the end of the with block
        story.a_lost = e
        say(f"A: releasing the lock: LockLost ({e.reason})")
    except (redis.RedisError, sqlite3.Error) as e:
        story.errors.append(f"worker A: {type(e).__name__}: {e}")
    finally:
        story.a_paused.set()  # never leave the coordinator waiting


def worker_b(r: redis.Redis, args: argparse.Namespace, path: str, story: Story) -> None:
    try:
        with Lock(r, args.key, owner="worker-B", ttl=10, wait=5) as token:
            story.token_b = token
            say(f"B: acquired {args.key} with token {token}")
            story.b_rows = fenced_take(path, B_TAKES, token)
            say(
                f"B: wrote {B_TAKES} units with its token (rowcount {story.b_rows}); releases"
            )
    except (redis.RedisError, sqlite3.Error) as e:
        story.errors.append(f"worker B: {type(e).__name__}: {e}")


def wait_for_expiry(observer: Lock, story: Story) -> bool:
    """Polls LOCK.STATUS until the server no longer shows A's grant: the lease is over."""
    started = time.monotonic()
    status = observer.status()
    if status is not None:
        say(
            f"coordinator: LOCK.STATUS: held by {status.owner}, {status.ttl_ms} ms left"
        )
    while status is not None and status.token == story.token_a:
        if time.monotonic() - started > STEP_TIMEOUT:
            return False
        time.sleep(0.01)
        status = observer.status()
    waited = (time.monotonic() - started) * 1000
    shown = "free" if status is None else f"held by {status.owner}"
    say(f"coordinator: LOCK.STATUS: {shown} after {waited:.0f} ms: A's lease is over")
    return True


def run(r: redis.Redis, args: argparse.Namespace, path: str) -> int:
    create_table(path)
    say(f"database {path}: row {SKU!r} with stock {INITIAL}, fence 0")
    story = Story()
    a = threading.Thread(target=worker_a, args=(r, args, path, story), name="worker-A")
    a.start()
    if not story.a_paused.wait(STEP_TIMEOUT) or story.token_a is None:
        story.a_resume.set()
        a.join()
        for error in story.errors or ["worker A did not get the lock"]:
            print(f"FAIL: {error}", file=sys.stderr)
        return 1

    # Wait until the server says the lease is over: not a guess from sleeping.
    observer = Lock(r, args.key, owner="coordinator")
    if not wait_for_expiry(observer, story):
        story.errors.append("A's lease did not end")
    else:
        b = threading.Thread(
            target=worker_b, args=(r, args, path, story), name="worker-B"
        )
        b.start()
        b.join()
    story.a_resume.set()
    a.join()

    stock, fence = read_row(path)
    say(f"database: row {SKU!r} now has stock {stock}, fence {fence}")

    problems = list(story.errors)
    if story.token_a is None or story.token_b is None or story.token_b <= story.token_a:
        problems.append(f"B's token {story.token_b} is not above A's {story.token_a}")
    if story.b_rows != 1:
        problems.append(f"B's write changed {story.b_rows} rows, expected 1")
    if story.a_rows != 0:
        problems.append(
            f"A's late write changed {story.a_rows} rows, expected 0 (refused)"
        )
    if (stock, fence) != (INITIAL - B_TAKES, story.token_b):
        problems.append(
            f"the row holds stock {stock}, fence {fence}; expected B's write only: "
            f"{INITIAL - B_TAKES}, {story.token_b}"
        )
    if story.a_lost is None:
        problems.append("A's release did not report the lock lost")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if problems:
        return 1
    say(
        f"OK: A's write with token {story.token_a} was refused by the database, whose row "
        f"kept B's token {story.token_b}: the paused holder could not overwrite the new one"
    )
    return 0


def main() -> int:
    args = parse_args()
    r = redis.Redis(host=args.host, port=args.port, socket_timeout=10)
    try:
        Lock(r, args.key, owner="probe").status()  # LOCK.STATUS: is the module there?
    except redis.RedisError as e:
        print(f"cannot use {args.host}:{args.port}: {e}", file=sys.stderr)
        print("is redis-server running with the fence module loaded?", file=sys.stderr)
        return 2
    try:
        if args.db:
            return run(r, args, args.db)
        with tempfile.TemporaryDirectory(prefix="fenced-sqlite.") as tmp:
            return run(r, args, os.path.join(tmp, "shop.db"))
    finally:
        r.close()


if __name__ == "__main__":
    sys.exit(main())
