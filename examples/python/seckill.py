#!/usr/bin/env python3
"""A flash sale ("seckill") on redis-fence with the redis_fence package.

Opens a sale with Stock.set (STOCK.SET), then many buyers place orders with
Stock.deduct(1, id=order_id) (STOCK.DEDUCT key 1 ID order-id) until the stock runs out. Every
order that gets a unit is sent twice, as a client whose first reply got lost would retry it:
the retry answers Deducted like a fresh deduction, so the buyer asks the ledger
(Stock.request, STOCK.REQUEST ... DETAIL) what the order holds: one unit, once. At the end it
checks the books: the orders that got stock add up to the initial stock, the stock is 0,
nothing was sold twice, and the ledger agrees with what the buyers saw.

With --limit N each buyer may hold at most N units (STOCK.SET ... LIMIT N, deductions with
buyer=): refusals come as LimitExceeded and are counted, and Stock.buyer (STOCK.BUYER) must
show every buyer at or below the limit, holding what they saw sold. The buyers are threads,
or with --async tasks on redis_fence.asyncio.

Exits 0 when the sale is exact, 1 when anything was oversold or lost, 2 when the server
cannot be used (not reachable, or without the fence module).

    python3 seckill.py [--host HOST] [--port PORT] [--stock N] [--buyers N] [--orders N]
                       [--limit N] [--async]

Host and port default to $REDIS_HOST and $REDIS_PORT, else 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

try:
    import redis
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("seckill.py needs redis-py: python3 -m pip install redis")
try:
    import redis_fence.asyncio as fence_aio
    from redis_fence import (
        Deducted,
        DeductResult,
        LimitExceeded,
        RequestInfo,
        SoldOut,
        Stock,
        StockInfo,
    )
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit(
        "seckill.py needs the redis_fence package: python3 -m pip install ./clients/python"
    )


def parse_args() -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument(
        "--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379"))
    )
    p.add_argument("--key", default="{sku:seckill}", help="the stock key")
    p.add_argument("--stock", type=int, default=100, help="units on sale")
    p.add_argument("--buyers", type=int, default=200, help="buyers (threads, or tasks)")
    p.add_argument(
        "--orders",
        type=int,
        default=1000,
        help="orders placed in all (more than the stock)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="units each buyer may hold (0: no limit per buyer)",
    )
    p.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="buyers as asyncio tasks on redis_fence.asyncio instead of threads",
    )
    args = p.parse_args()
    if args.stock < 0 or args.buyers < 1 or args.limit < 0:
        p.error("--stock and --limit must be at least 0 and --buyers at least 1")
    if args.orders < args.stock:
        p.error("--orders must be at least --stock, so that the sale sells out")
    if args.limit and capacity(shares(args), args.limit) < args.stock:
        p.error(
            f"{args.buyers} buyers holding at most {args.limit} each cannot buy {args.stock} "
            "units with these orders: raise --limit, --buyers or --orders, so that it sells out"
        )
    return args


def order_ids(count: int) -> list[str]:
    """Order ids from an order service: unique per order."""
    return [f"order-{n:06d}" for n in range(count)]


def shares(args: argparse.Namespace) -> list[list[str]]:
    """The orders split among the buyers."""
    everything = order_ids(args.orders)
    return [everything[i :: args.buyers] for i in range(args.buyers)]


def capacity(split: Sequence[Sequence[str]], limit: int) -> int:
    """The most units the buyers' orders can take under a limit per buyer."""
    return sum(min(len(orders), limit) for orders in split)


def buyer_name(index: int) -> str:
    return f"buyer-{index:04d}"


class Books:
    """What the buyers saw, shared by the threads (or tasks)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.guard = threading.Lock()
        self.sold: list[str] = []  # order ids that got a unit
        self.sold_by: dict[str, int] = {}  # buyer -> units the buyer saw sold
        self.sold_out = 0  # orders refused for lack of stock
        self.limited = 0  # orders refused by the limit per buyer (LimitExceeded)
        self.replays = 0  # retries answered without deducting
        self.bad_replays: list[
            str
        ] = []  # retries answered as sold out (must stay empty)
        self.negative: list[
            str
        ] = []  # remaining quantities below zero (must stay empty)
        self.bad_ledger: list[
            str
        ] = []  # orders the ledger did not show holding one unit
        self.bad_limits: list[
            str
        ] = []  # LimitExceeded with other numbers than expected
        self.errors: list[str] = []

    def refused(self) -> None:
        with self.guard:
            self.sold_out += 1

    def limit_exceeded(
        self, order_id: str, buyer: str | None, e: LimitExceeded
    ) -> None:
        with self.guard:
            self.limited += 1
            # A buyer at the limit asks for 1 more: "has <limit> of at most <limit>".
            if (e.buyer, e.holds, e.limit) != (buyer, self.limit, self.limit):
                self.bad_limits.append(f"{order_id}: {e}")

    def sale(
        self,
        order_id: str,
        buyer: str | None,
        first: Deducted,
        again: DeductResult,
        info: RequestInfo | None,
    ) -> None:
        """One order that got a unit: its first reply, its retry's, and its ledger entry."""
        with self.guard:
            self.sold.append(order_id)
            if buyer is not None:
                self.sold_by[buyer] = self.sold_by.get(buyer, 0) + 1
            if first.remaining < 0:
                self.negative.append(f"{order_id}: {first.remaining}")
            if isinstance(again, SoldOut):
                self.bad_replays.append(order_id)
            else:
                # A replay answers what remains now: never below zero, never more than the
                # first reply saw (nothing is refunded during the sale).
                self.replays += 1
                if again.remaining < 0 or again.remaining > first.remaining:
                    self.negative.append(
                        f"{order_id}: {first.remaining} then {again.remaining}"
                    )
            # What tells the retry from a second sale: the ledger holds the order once, 1 unit.
            if (
                info is None
                or info.state != "deducted"
                or info.quantity != 1
                or info.holds != 1
                or info.buyer != buyer
            ):
                self.bad_ledger.append(f"{order_id}: {info}")

    def error(self, order_id: str, e: Exception) -> None:
        with self.guard:
            self.errors.append(f"{order_id}: {type(e).__name__}: {e}")


@dataclass
class Final:
    """The server's state after the sale."""

    remaining: int | None
    info: StockInfo | None
    ledger: dict[str, int] = field(default_factory=dict)  # order id -> units it holds
    buyers: dict[str, int | None] = field(default_factory=dict)  # buyer -> STOCK.BUYER


# ---- threads ---------------------------------------------------------------------------------


def buyer_thread(
    stock: Stock, buyer: str | None, orders: list[str], books: Books
) -> None:
    for order_id in orders:
        try:
            try:
                first = stock.deduct(1, id=order_id, buyer=buyer)
            except LimitExceeded as e:
                books.limit_exceeded(order_id, buyer, e)
                continue
            if isinstance(first, SoldOut):
                books.refused()
                continue
            # The same order again, as after a timeout: a replay, nothing is taken.
            again = stock.deduct(1, id=order_id, buyer=buyer)
            books.sale(order_id, buyer, first, again, stock.request(order_id))
        except (redis.RedisError, ValueError, TypeError) as e:
            books.error(order_id, e)


def run_threads(args: argparse.Namespace, books: Books) -> tuple[float, Final]:
    # One connection per buyer thread at most (redis-py clients are thread-safe over a pool).
    # The socket timeout only guards against a hung server: a loaded machine may be slow to
    # answer, and a reply given up on would count as an error of the sale.
    r = redis.Redis(
        host=args.host,
        port=args.port,
        socket_timeout=60,
        max_connections=args.buyers + 1,
    )
    try:
        stock = Stock(r, args.key)
        split = shares(args)
        threads = [
            threading.Thread(
                target=buyer_thread,
                args=(stock, buyer_name(i) if args.limit else None, share, books),
                name=buyer_name(i),
            )
            for i, share in enumerate(split)
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started

        final = Final(remaining=stock.get(), info=stock.info())
        for order_id in order_ids(args.orders):
            info = stock.request(order_id)
            if info is not None:
                final.ledger[order_id] = info.holds
        if args.limit:
            for i in range(args.buyers):
                final.buyers[buyer_name(i)] = stock.buyer(buyer_name(i))
        return elapsed, final
    finally:
        r.close()


# ---- asyncio ---------------------------------------------------------------------------------


async def buyer_task(
    stock: fence_aio.Stock, buyer: str | None, orders: list[str], books: Books
) -> None:
    for order_id in orders:
        try:
            try:
                first = await stock.deduct(1, id=order_id, buyer=buyer)
            except LimitExceeded as e:
                books.limit_exceeded(order_id, buyer, e)
                continue
            if isinstance(first, SoldOut):
                books.refused()
                continue
            again = await stock.deduct(1, id=order_id, buyer=buyer)
            books.sale(order_id, buyer, first, again, await stock.request(order_id))
        except (redis.RedisError, ValueError, TypeError) as e:
            books.error(order_id, e)


async def run_tasks(args: argparse.Namespace, books: Books) -> tuple[float, Final]:
    pool = aioredis.BlockingConnectionPool(
        host=args.host,
        port=args.port,
        socket_timeout=60,
        max_connections=args.buyers + 1,
    )
    r = aioredis.Redis(connection_pool=pool)
    try:
        stock = fence_aio.Stock(r, args.key)
        split = shares(args)
        started = time.monotonic()
        await asyncio.gather(
            *(
                buyer_task(stock, buyer_name(i) if args.limit else None, share, books)
                for i, share in enumerate(split)
            )
        )
        elapsed = time.monotonic() - started

        final = Final(remaining=await stock.get(), info=await stock.info())
        for order_id in order_ids(args.orders):
            info = await stock.request(order_id)
            if info is not None:
                final.ledger[order_id] = info.holds
        if args.limit:
            for i in range(args.buyers):
                final.buyers[buyer_name(i)] = await stock.buyer(buyer_name(i))
        return elapsed, final
    finally:
        await r.aclose()
        await pool.disconnect()


async def open_sale_async(args: argparse.Namespace) -> None:
    r = aioredis.Redis(host=args.host, port=args.port, socket_timeout=10)
    try:
        await r.ping()
        await fence_aio.Stock(r, args.key).set(args.stock, limit=args.limit)
    finally:
        await r.aclose()


def open_sale(args: argparse.Namespace) -> None:
    """STOCK.SET key stock LIMIT limit (LIMIT 0: no limit per buyer, clearing an old one)."""
    r = redis.Redis(host=args.host, port=args.port, socket_timeout=10)
    try:
        r.ping()
        Stock(r, args.key).set(args.stock, limit=args.limit)
    finally:
        r.close()


# ---- the books -------------------------------------------------------------------------------


def check(args: argparse.Namespace, books: Books, final: Final) -> list[str]:
    problems = []
    sold = len(books.sold)
    unique = len(set(books.sold))
    remaining = final.remaining
    if sold != args.stock:
        problems.append(f"sold {sold}, expected all {args.stock}")
    if sold > args.stock or unique != sold:
        problems.append(
            f"OVERSOLD: {sold} sales ({unique} distinct orders) of {args.stock} units"
        )
    if remaining is None or remaining != args.stock - sold or remaining < 0:
        taken = None if remaining is None else args.stock - remaining
        problems.append(
            f"remaining {remaining}, expected {args.stock - sold}: {taken} units left the "
            f"stock for {sold} sales"
        )
    if books.bad_replays:
        problems.append(f"retries refused instead of replayed: {books.bad_replays[:5]}")
    if books.negative:
        problems.append(f"negative or rising stock seen: {books.negative[:5]}")
    if books.bad_ledger:
        problems.append(
            f"orders the ledger does not show holding 1 unit: {books.bad_ledger[:5]}"
        )
    # The ledger must hold exactly the orders that got a unit, one unit each.
    ledger_units = sum(final.ledger.values())
    if sorted(final.ledger) != sorted(books.sold) or ledger_units != sold:
        problems.append(
            f"the ledger holds {len(final.ledger)} orders ({ledger_units} units), "
            f"the buyers saw {sold}"
        )
    info = final.info
    if info is None or (info.deducted, info.requests, info.limit) != (
        sold,
        sold,
        args.limit,
    ):
        problems.append(
            f"STOCK.INFO {info}: expected {sold} deducted in {sold} requests"
        )
    if books.sold_out + books.limited != args.orders - sold:
        problems.append(
            f"{books.sold_out} sold-out and {books.limited} limit replies, expected "
            f"{args.orders - sold} refusals in all"
        )
    if not args.limit and books.limited:
        problems.append(f"{books.limited} limit refusals without a limit")
    if books.bad_limits:
        problems.append(
            f"limit refusals with unexpected numbers: {books.bad_limits[:5]}"
        )
    above = {b: n for b, n in final.buyers.items() if n is None or n > args.limit}
    if above:
        problems.append(
            f"buyers above the limit of {args.limit}: {sorted(above.items())[:5]}"
        )
    differ = {
        b: (n, books.sold_by.get(b, 0))
        for b, n in final.buyers.items()
        if n != books.sold_by.get(b, 0)
    }
    if differ:
        problems.append(
            f"STOCK.BUYER differs from what buyers saw: {sorted(differ.items())[:5]}"
        )
    if books.errors:
        problems.append(f"{len(books.errors)} errors, first: {books.errors[0]}")
    return problems


def main() -> int:
    args = parse_args()
    try:
        if args.use_async:
            asyncio.run(open_sale_async(args))
        else:
            open_sale(args)
    except redis.RedisError as e:
        print(f"cannot open the sale on {args.host}:{args.port}: {e}", file=sys.stderr)
        print("is redis-server running with the fence module loaded?", file=sys.stderr)
        return 2

    books = Books(args.limit)
    if args.use_async:
        elapsed, final = asyncio.run(run_tasks(args, books))
    else:
        elapsed, final = run_threads(args, books)

    sold = len(books.sold)
    mode = "asyncio tasks" if args.use_async else "threads"
    per_buyer = f", at most {args.limit} per buyer" if args.limit else ""
    print(
        f"seckill on {args.host}:{args.port} {args.key}: {args.orders} orders from "
        f"{args.buyers} buyers ({mode}) for {args.stock} units{per_buyer} in {elapsed:.2f}s "
        f"({args.orders / elapsed:.0f} orders/s)"
    )
    print(f"sold: {sold}")
    print(f"remaining: {final.remaining}")
    print(
        f"sold out replies: {books.sold_out}, retries replayed without deducting: "
        f"{books.replays} (each confirmed by STOCK.REQUEST: 1 unit)"
    )
    if args.limit:
        most = max((n or 0 for n in final.buyers.values()), default=0)
        print(
            f"limit refusals: {books.limited}; buyers holding units: "
            f"{sum(1 for n in final.buyers.values() if n)}, the most held by one: {most}"
        )

    problems = check(args, books, final)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("OK: every unit sold exactly once, nothing oversold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
