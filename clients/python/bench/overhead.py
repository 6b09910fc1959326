#!/usr/bin/env python3
"""What the redis_fence package costs per call over redis-py's raw execute_command.

For each call, N calls (default 10,000) one after another on one connection per round, through
the package and raw in alternated blocks of 500 (ABBA..., so that a load that comes and goes on
the machine weighs on both alike), the median of the rounds (default 5) reported: wall time per
call (the round trip included) and the client's CPU per call (time.process_time), and the
difference, the package's overhead:

  - STOCK.DEDUCT key 1 ID <fresh id>: Stock.deduct(1, id=...) against execute_command (each
    round starts a new sale with STOCK.SET; the two fill its ledger together, block by block);
  - LOCK.ACQUIRE + LOCK.RELEASE ... TOKEN: one Lock handle (no watchdog) acquired and released,
    and a new handle per call in ``with Lock(...)``, against the two raw commands;
  - STOCK.GET: Stock.get() against execute_command;

the same on redis.asyncio with redis_fence.asyncio; then a flash sale of 200 buyer threads
through the package and raw (orders/s, and the books: nothing oversold, nothing lost).

Prints a markdown table. Exits 0, or 1 when a sale's books are wrong, 2 when the server cannot
be used. ``scripts/bench-python.sh`` (``make bench-python``) runs it against a throw-away
server, the server and this client pinned to one core each.

    python3 overhead.py [--host H] [--port P] [--calls N] [--rounds R] [--buyers B] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

try:
    import redis
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("overhead.py needs redis-py: python3 -m pip install redis")
try:
    import redis_fence
    import redis_fence.asyncio as fence_aio
    from redis_fence import Deducted, Lock, Stock
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("overhead.py needs the redis_fence package: python3 -m pip install ./clients/python")

STOCK_KEY = "{bench:py}:stock"
LOCK_KEY = "{bench:py}:lock"
SALE_KEY = "{bench:py}:sale"
OWNER = "bench-owner"
TTL = 10.0  # seconds, the locks' TTL
TTL_MS = 10_000

# A runner makes its next ``k`` calls; a variant makes the runner of one round (untimed) from
# the round's number and its number of calls.
Runner = Callable[[int], None]
AsyncRunner = Callable[[int], Awaitable[None]]
SyncVariant = Callable[[int, int], Runner]
AsyncVariant = Callable[[int, int], Awaitable[AsyncRunner]]
# Calls per block: a round alternates raw and package blocks (ABBA...), so that both see the
# same machine: a load that comes and goes weighs on both alike.
BLOCK = 500
# Each round starts a new sale with this stock: enough for every deduction of the round.
SALE_UNITS = 10**12


def parse_args() -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    p.add_argument("--calls", type=int, default=10_000, help="calls per round and variant")
    p.add_argument("--rounds", type=int, default=5, help="rounds (the median is reported)")
    p.add_argument("--buyers", type=int, default=200, help="buyer threads of the sale")
    p.add_argument("--stock", type=int, default=2_000, help="units on sale")
    p.add_argument("--orders", type=int, default=10_000, help="orders placed in the sale")
    p.add_argument("--sale-rounds", type=int, default=3, help="sales per variant")
    p.add_argument(
        "--quick", action="store_true", help="2,000 calls, 3 rounds, a sale of 2,000 orders"
    )
    args = p.parse_args()
    if args.quick:
        args.calls, args.rounds, args.orders, args.stock, args.sale_rounds = 2_000, 3, 2_000, 500, 1
    if min(args.calls, args.rounds, args.buyers, args.sale_rounds) < 1 or args.stock < 1:
        p.error("--calls, --rounds, --buyers, --stock and --sale-rounds must be at least 1")
    if args.orders < args.stock:
        p.error("--orders must be at least --stock, so that the sale sells out")
    return args


@dataclass
class Row:
    """One call's measurements: per round, wall and CPU microseconds per call."""

    name: str
    raw_wall: list[float] = field(default_factory=list)
    raw_cpu: list[float] = field(default_factory=list)
    pkg_wall: list[float] = field(default_factory=list)
    pkg_cpu: list[float] = field(default_factory=list)

    def cells(self) -> list[str]:
        rw, rc = statistics.median(self.raw_wall), statistics.median(self.raw_cpu)
        pw, pc = statistics.median(self.pkg_wall), statistics.median(self.pkg_cpu)
        return [
            self.name,
            f"{rw:.1f}",
            f"{pw:.1f}",
            f"{pw - rw:+.1f}",
            f"{rc:.1f}",
            f"{pc:.1f}",
            f"{pc - rc:+.1f}",
        ]


def warm_up(args: argparse.Namespace) -> int:
    return max(BLOCK, int(args.calls) // 10)


def add_block(clock: list[float], started: float, cpu_started: float) -> None:
    clock[0] += time.perf_counter() - started
    clock[1] += time.process_time() - cpu_started


def record(row: Row, calls: int, raw: list[float], pkg: list[float]) -> None:
    row.raw_wall.append(raw[0] / calls * 1e6)
    row.raw_cpu.append(raw[1] / calls * 1e6)
    row.pkg_wall.append(pkg[0] / calls * 1e6)
    row.pkg_cpu.append(pkg[1] / calls * 1e6)


def blocks(calls: int) -> list[int]:
    return [min(BLOCK, calls - done) for done in range(0, calls, BLOCK)]


def measure(row: Row | None, raw: Runner, pkg: Runner, calls: int, raw_first: bool) -> None:
    """One round: ``calls`` calls of each runner in alternated blocks (``row`` None: a
    warm-up, not recorded)."""
    clocks = ([0.0, 0.0], [0.0, 0.0])  # raw, package: wall and CPU seconds
    first = 0 if raw_first else 1
    gc.collect()
    for k in blocks(calls):
        for which in (first, 1 - first):
            cpu_started, started = time.process_time(), time.perf_counter()
            (raw, pkg)[which](k)
            add_block(clocks[which], started, cpu_started)
        first = 1 - first
    if row is not None:
        record(row, calls, *clocks)


async def measure_async(
    row: Row | None, raw: AsyncRunner, pkg: AsyncRunner, calls: int, raw_first: bool
) -> None:
    clocks = ([0.0, 0.0], [0.0, 0.0])
    first = 0 if raw_first else 1
    gc.collect()
    for k in blocks(calls):
        for which in (first, 1 - first):
            cpu_started, started = time.process_time(), time.perf_counter()
            await (raw, pkg)[which](k)
            add_block(clocks[which], started, cpu_started)
        first = 1 - first
    if row is not None:
        record(row, calls, *clocks)


# ---- sync --------------------------------------------------------------------------------


def sync_variants(r: redis.Redis) -> list[tuple[str, SyncVariant, SyncVariant]]:
    """(name, raw variant, package variant)."""
    raw_call: Callable[..., Any] = r.execute_command
    stock = Stock(r, STOCK_KEY)

    def raw_deduct(round_no: int, count: int) -> Runner:
        ids = iter([f"raw-{round_no}-{i}" for i in range(count)])

        def run(k: int) -> None:
            for order_id in islice(ids, k):
                raw_call("STOCK.DEDUCT", STOCK_KEY, 1, "ID", order_id)

        return run

    def pkg_deduct(round_no: int, count: int) -> Runner:
        ids = iter([f"pkg-{round_no}-{i}" for i in range(count)])
        deduct = stock.deduct

        def run(k: int) -> None:
            for order_id in islice(ids, k):
                deduct(1, id=order_id)

        return run

    def raw_lock(round_no: int, count: int) -> Runner:
        def run(k: int) -> None:
            for _ in range(k):
                token = raw_call("LOCK.ACQUIRE", LOCK_KEY, OWNER, TTL_MS)
                raw_call("LOCK.RELEASE", LOCK_KEY, OWNER, "TOKEN", token)

        return run

    def pkg_lock(round_no: int, count: int) -> Runner:
        lock = Lock(r, LOCK_KEY, owner=OWNER, ttl=TTL)
        acquire, release = lock.acquire, lock.release

        def run(k: int) -> None:
            for _ in range(k):
                acquire()
                release()

        return run

    def pkg_with_lock(round_no: int, count: int) -> Runner:
        def run(k: int) -> None:
            for _ in range(k):
                with Lock(r, LOCK_KEY, owner=OWNER, ttl=TTL):
                    pass

        return run

    def raw_get(round_no: int, count: int) -> Runner:
        def run(k: int) -> None:
            for _ in range(k):
                raw_call("STOCK.GET", STOCK_KEY)

        return run

    def pkg_get(round_no: int, count: int) -> Runner:
        get = stock.get

        def run(k: int) -> None:
            for _ in range(k):
                get()

        return run

    return [
        ("STOCK.DEDUCT … ID (fresh ids)", raw_deduct, pkg_deduct),
        ("LOCK.ACQUIRE + LOCK.RELEASE (one Lock handle)", raw_lock, pkg_lock),
        ("LOCK.ACQUIRE + LOCK.RELEASE (`with`, new handle)", raw_lock, pkg_with_lock),
        ("STOCK.GET", raw_get, pkg_get),
    ]


def bench_sync(args: argparse.Namespace) -> list[Row]:
    r = redis.Redis(host=args.host, port=args.port, socket_timeout=30)
    stock = Stock(r, STOCK_KEY)
    try:
        rows = []
        for name, raw, pkg in sync_variants(r):
            row = Row(f"sync: {name}")
            stock.set(SALE_UNITS)
            # A warm-up, untimed: connections made, code paths taken.
            measure(None, raw(-1, warm_up(args)), pkg(-1, warm_up(args)), warm_up(args), True)
            for round_no in range(args.rounds):
                stock.set(SALE_UNITS)  # a new sale: an empty ledger each round
                raw_runner, pkg_runner = raw(round_no, args.calls), pkg(round_no, args.calls)
                measure(row, raw_runner, pkg_runner, args.calls, round_no % 2 == 0)
            rows.append(row)
            say(f"  {row.name}: done")
        return rows
    finally:
        r.delete(STOCK_KEY, LOCK_KEY)
        r.close()


# ---- asyncio -----------------------------------------------------------------------------


def async_variants(r: aioredis.Redis) -> list[tuple[str, AsyncVariant, AsyncVariant]]:
    raw_call: Callable[..., Awaitable[Any]] = r.execute_command
    stock = fence_aio.Stock(r, STOCK_KEY)

    async def raw_deduct(round_no: int, count: int) -> AsyncRunner:
        ids = iter([f"raw-{round_no}-{i}" for i in range(count)])

        async def run(k: int) -> None:
            for order_id in islice(ids, k):
                await raw_call("STOCK.DEDUCT", STOCK_KEY, 1, "ID", order_id)

        return run

    async def pkg_deduct(round_no: int, count: int) -> AsyncRunner:
        ids = iter([f"pkg-{round_no}-{i}" for i in range(count)])
        deduct = stock.deduct

        async def run(k: int) -> None:
            for order_id in islice(ids, k):
                await deduct(1, id=order_id)

        return run

    async def raw_lock(round_no: int, count: int) -> AsyncRunner:
        async def run(k: int) -> None:
            for _ in range(k):
                token = await raw_call("LOCK.ACQUIRE", LOCK_KEY, OWNER, TTL_MS)
                await raw_call("LOCK.RELEASE", LOCK_KEY, OWNER, "TOKEN", token)

        return run

    async def pkg_lock(round_no: int, count: int) -> AsyncRunner:
        lock = fence_aio.Lock(r, LOCK_KEY, owner=OWNER, ttl=TTL)
        acquire, release = lock.acquire, lock.release

        async def run(k: int) -> None:
            for _ in range(k):
                await acquire()
                await release()

        return run

    async def pkg_with_lock(round_no: int, count: int) -> AsyncRunner:
        async def run(k: int) -> None:
            for _ in range(k):
                async with fence_aio.Lock(r, LOCK_KEY, owner=OWNER, ttl=TTL):
                    pass

        return run

    async def raw_get(round_no: int, count: int) -> AsyncRunner:
        async def run(k: int) -> None:
            for _ in range(k):
                await raw_call("STOCK.GET", STOCK_KEY)

        return run

    async def pkg_get(round_no: int, count: int) -> AsyncRunner:
        get = stock.get

        async def run(k: int) -> None:
            for _ in range(k):
                await get()

        return run

    return [
        ("STOCK.DEDUCT … ID (fresh ids)", raw_deduct, pkg_deduct),
        ("LOCK.ACQUIRE + LOCK.RELEASE (one Lock handle)", raw_lock, pkg_lock),
        ("LOCK.ACQUIRE + LOCK.RELEASE (`async with`, new handle)", raw_lock, pkg_with_lock),
        ("STOCK.GET", raw_get, pkg_get),
    ]


async def bench_async(args: argparse.Namespace) -> list[Row]:
    r = aioredis.Redis(host=args.host, port=args.port, socket_timeout=30)
    stock = fence_aio.Stock(r, STOCK_KEY)
    try:
        rows = []
        for name, raw, pkg in async_variants(r):
            row = Row(f"asyncio: {name}")
            await stock.set(SALE_UNITS)
            w = warm_up(args)
            await measure_async(None, await raw(-1, w), await pkg(-1, w), w, True)
            for round_no in range(args.rounds):
                await stock.set(SALE_UNITS)
                raw_runner = await raw(round_no, args.calls)
                pkg_runner = await pkg(round_no, args.calls)
                await measure_async(row, raw_runner, pkg_runner, args.calls, round_no % 2 == 0)
            rows.append(row)
            say(f"  {row.name}: done")
        return rows
    finally:
        await r.delete(STOCK_KEY, LOCK_KEY)
        await r.aclose()


# ---- the flash sale ----------------------------------------------------------------------


@dataclass
class Sale:
    """One sale's outcome, as the buyers saw it and as the server's books show it."""

    seconds: float
    cpu_seconds: float
    sold: list[str]
    sold_out: int
    errors: list[str]
    remaining: int | None
    deducted: int
    requests: int


def run_sale(args: argparse.Namespace, through_package: bool) -> Sale:
    # One connection per buyer thread at most; the timeout only guards against a hung server.
    r = redis.Redis(
        host=args.host, port=args.port, socket_timeout=60, max_connections=args.buyers + 1
    )
    try:
        stock = Stock(r, SALE_KEY)
        stock.set(args.stock, limit=0)
        raw_call: Callable[..., Any] = r.execute_command
        orders = [f"order-{n:07d}" for n in range(args.orders)]
        shares = [orders[i :: args.buyers] for i in range(args.buyers)]
        guard = threading.Lock()
        sold: list[str] = []
        sold_out = [0]
        errors: list[str] = []

        def buyer(share: list[str]) -> None:
            mine: list[str] = []
            refused = 0
            for order_id in share:
                try:
                    if through_package:
                        ok = isinstance(stock.deduct(1, id=order_id), Deducted)
                    else:
                        ok = raw_call("STOCK.DEDUCT", SALE_KEY, 1, "ID", order_id) is not None
                except redis.RedisError as e:
                    with guard:
                        errors.append(f"{order_id}: {e}")
                    continue
                if ok:
                    mine.append(order_id)
                else:
                    refused += 1
            with guard:
                sold.extend(mine)
                sold_out[0] += refused

        threads = [threading.Thread(target=buyer, args=(share,)) for share in shares]
        gc.collect()
        cpu_started, started = time.process_time(), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        info = stock.info()
        return Sale(
            seconds=seconds,
            cpu_seconds=cpu_seconds,
            sold=sold,
            sold_out=sold_out[0],
            errors=errors,
            remaining=stock.get(),
            deducted=0 if info is None else info.deducted,
            requests=0 if info is None else info.requests,
        )
    finally:
        r.close()


def sale_problems(args: argparse.Namespace, sale: Sale) -> list[str]:
    problems = []
    sold = len(sale.sold)
    if sold > args.stock or len(set(sale.sold)) != sold:
        problems.append(f"OVERSOLD: {sold} sales ({len(set(sale.sold))} distinct) of {args.stock}")
    if sold != args.stock or sale.remaining != 0:
        problems.append(f"sold {sold} of {args.stock}, {sale.remaining} remaining")
    if (sale.deducted, sale.requests) != (sold, sold):
        problems.append(f"STOCK.INFO: {sale.deducted} deducted in {sale.requests} requests")
    if sale.sold_out != args.orders - sold:
        problems.append(f"{sale.sold_out} sold-out replies, expected {args.orders - sold}")
    if sale.errors:
        problems.append(f"{len(sale.errors)} errors, first: {sale.errors[0]}")
    return problems


def bench_sale(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The sale's table lines, and the problems found in any sale's books."""
    results: dict[bool, list[Sale]] = {False: [], True: []}
    problems: list[str] = []
    for round_no in range(args.sale_rounds):
        order = (False, True) if round_no % 2 == 0 else (True, False)
        for through_package in order:
            sale = run_sale(args, through_package)
            results[through_package].append(sale)
            kind = "redis_fence" if through_package else "raw"
            problems += [f"{kind} sale {round_no + 1}: {p}" for p in sale_problems(args, sale)]
    lines = [
        (
            f"| client | orders/s (median of {args.sale_rounds}) | client CPU µs/order | sold | "
            "remaining | oversold | lost |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for through_package in (False, True):
        sales = results[through_package]
        rate = statistics.median(args.orders / s.seconds for s in sales)
        cpu = statistics.median(s.cpu_seconds / args.orders * 1e6 for s in sales)
        last = sales[-1]
        sold = len(last.sold)
        oversold = max(len(s.sold) - args.stock for s in sales)
        lost = max(args.stock - len(s.sold) - (s.remaining or 0) for s in sales)
        lines.append(
            f"| {'Stock.deduct' if through_package else 'execute_command'} | {rate:,.0f} | "
            f"{cpu:.1f} | {sold} | {last.remaining} | {max(oversold, 0)} | {max(lost, 0)} |"
        )
    return lines, problems


# ---- main --------------------------------------------------------------------------------


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> int:
    args = parse_args()
    r = redis.Redis(host=args.host, port=args.port, socket_timeout=10)
    try:
        server: dict[str, Any] = r.info("server")
        Stock(r, STOCK_KEY).get()  # STOCK.GET: is the module loaded?
    except redis.RedisError as e:
        print(f"overhead.py: cannot use {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    finally:
        r.close()
    name = "valkey" if "valkey_version" in server else "redis"
    version = server.get("valkey_version", server.get("redis_version"))

    say(f"overhead.py: {args.calls} calls x {args.rounds} rounds per variant (sync)")
    sync_rows = bench_sync(args)
    say("overhead.py: the same on asyncio")
    async_rows = asyncio.run(bench_async(args))
    say(f"overhead.py: {args.sale_rounds} sales per client of {args.buyers} buyer threads")
    sale_lines, problems = bench_sale(args)

    print(f"## redis_fence overhead over raw execute_command ({name} {version})")
    print()
    print(
        f"Python {platform.python_version()}, redis-py {redis.__version__}, redis_fence "
        f"{redis_fence.__version__}; {args.calls:,} calls per round one after another on one "
        f"connection, median of {args.rounds} alternated rounds. Wall µs/call includes the "
        "round trip; CPU µs/call is the client process's (time.process_time)."
    )
    print()
    print(
        "| call | raw µs/call | redis_fence µs/call | overhead µs | raw CPU µs/call | "
        "redis_fence CPU µs/call | CPU overhead µs |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in sync_rows + async_rows:
        print("| " + " | ".join(row.cells()) + " |")
    print()
    print(
        f"### Flash sale: {args.buyers} buyer threads, {args.orders:,} orders "
        f"(STOCK.DEDUCT … ID) for {args.stock:,} units"
    )
    print()
    for line in sale_lines:
        print(line)
    print()
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}", file=sys.stderr)
        return 1
    print("Every sale: sold exactly the stock, 0 remaining, nothing oversold or lost.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
