#!/usr/bin/env python3
"""A flash sale ("seckill") on redis-fence with redis-py.

Opens a sale with STOCK.SET, then many buyer threads place orders with
STOCK.DEDUCT key 1 ID order-id until the stock runs out. Every order is sent twice, as a
client whose first reply got lost would retry it: the retry must deduct nothing. At the end
it checks the books: the orders that got stock add up to the initial stock, the stock is 0,
nothing was sold twice, and the ledger (STOCK.REQUEST) agrees with what the buyers saw.

Exits 0 when the sale is exact, 1 when anything was oversold or lost, 2 when the server
cannot be used (not reachable, or without the fence module).

    python3 seckill.py [--host HOST] [--port PORT] [--stock N] [--buyers N] [--orders N]

Host and port default to $REDIS_HOST and $REDIS_PORT, else 127.0.0.1:6379.
"""

import argparse
import os
import sys
import threading
import time

try:
    import redis
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("seckill.py needs redis-py: python3 -m pip install redis")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    p.add_argument("--key", default="{sku:seckill}", help="the stock key")
    p.add_argument("--stock", type=int, default=100, help="units on sale")
    p.add_argument("--buyers", type=int, default=32, help="buyer threads")
    p.add_argument(
        "--orders", type=int, default=1000, help="orders placed in all (more than the stock)"
    )
    args = p.parse_args()
    if args.stock < 0 or args.buyers < 1:
        p.error("--stock must be at least 0 and --buyers at least 1")
    if args.orders < args.stock:
        p.error("--orders must be at least --stock, so that the sale sells out")
    return args


class Books:
    """What the buyers saw, shared by the threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sold = []  # order ids that got a unit
        self.sold_out = 0  # orders refused for lack of stock
        self.replays = 0  # retries answered without deducting
        self.bad_replays = []  # retries answered as sold out (must stay empty)
        self.negative = []  # remaining quantities below zero (must stay empty)
        self.errors = []


def buyer(r, key, orders, books):
    for order_id in orders:
        try:
            remaining = r.execute_command("STOCK.DEDUCT", key, 1, "ID", order_id)
            if remaining is None:
                with books.lock:
                    books.sold_out += 1
                continue
            # The same order again, as after a timeout: the ledger answers with the current
            # quantity and nothing is taken (a second deduction would show in the totals).
            again = r.execute_command("STOCK.DEDUCT", key, 1, "ID", order_id)
            with books.lock:
                books.sold.append(order_id)
                if remaining < 0 or (again is not None and again < 0):
                    books.negative.append((order_id, remaining, again))
                if again is None:
                    books.bad_replays.append(order_id)
                else:
                    books.replays += 1
        except redis.RedisError as e:
            with books.lock:
                books.errors.append(f"{order_id}: {e}")


def main():
    args = parse_args()
    # One connection per buyer thread at most (redis-py clients are thread-safe over a pool).
    # The socket timeout only guards against a hung server: a loaded machine may be slow to
    # answer, and a reply given up on would count as an error of the sale.
    pool = redis.BlockingConnectionPool(
        host=args.host, port=args.port, socket_timeout=60, max_connections=args.buyers + 1
    )
    r = redis.Redis(connection_pool=pool)
    try:
        r.ping()
        r.execute_command("STOCK.SET", args.key, args.stock)
    except redis.RedisError as e:
        print(f"cannot open the sale on {args.host}:{args.port}: {e}", file=sys.stderr)
        print("is redis-server running with the fence module loaded?", file=sys.stderr)
        return 2

    # Order ids from an order service: unique per order, split among the buyers.
    all_orders = [f"order-{n:06d}" for n in range(args.orders)]
    shares = [all_orders[i :: args.buyers] for i in range(args.buyers)]
    books = Books()
    threads = [
        threading.Thread(target=buyer, args=(r, args.key, share, books), name=f"buyer-{i}")
        for i, share in enumerate(shares)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started

    remaining = r.execute_command("STOCK.GET", args.key)
    sold = len(books.sold)
    unique = len(set(books.sold))
    # The ledger must hold exactly the orders that got a unit, one unit each.
    ledger = r.pipeline(transaction=False)
    for order_id in all_orders:
        ledger.execute_command("STOCK.REQUEST", args.key, order_id)
    held = dict(zip(all_orders, ledger.execute()))
    ledger_sold = sorted(o for o, q in held.items() if q is not None)
    ledger_units = sum(q for q in held.values() if q is not None)

    print(
        f"seckill on {args.host}:{args.port} {args.key}: {args.orders} orders from "
        f"{args.buyers} buyers for {args.stock} units in {elapsed:.2f}s"
    )
    print(f"sold: {sold}")
    print(f"remaining: {remaining}")
    print(f"sold out replies: {books.sold_out}, retries replayed without deducting: {books.replays}")

    problems = []
    if sold != args.stock:
        problems.append(f"sold {sold}, expected all {args.stock}")
    if sold > args.stock or unique != sold:
        problems.append(f"OVERSOLD: {sold} sales ({unique} distinct orders) of {args.stock} units")
    if remaining is None or remaining != args.stock - sold or remaining < 0:
        taken = None if remaining is None else args.stock - remaining
        problems.append(
            f"remaining {remaining}, expected {args.stock - sold}: {taken} units left the "
            f"stock for {sold} sales"
        )
    if books.bad_replays:
        problems.append(f"retries refused instead of replayed: {books.bad_replays[:5]}")
    if books.negative:
        problems.append(f"negative stock seen: {books.negative[:5]}")
    if ledger_sold != sorted(books.sold) or ledger_units != sold:
        problems.append(
            f"the ledger holds {len(ledger_sold)} orders ({ledger_units} units), "
            f"the buyers saw {sold}"
        )
    if books.sold_out != args.orders - sold:
        problems.append(f"{books.sold_out} sold-out replies, expected {args.orders - sold}")
    if books.errors:
        problems.append(f"{len(books.errors)} errors, first: {books.errors[0]}")
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    if problems:
        return 1
    print("OK: every unit sold exactly once, nothing oversold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
