#!/usr/bin/env python3
"""Unpaid orders give their stock back by themselves: holds on redis-fence with redis-py.

Buyers place orders with STOCK.DEDUCT key 1 ID order-id HOLD ms EVENTS stream (each sent
twice, as a client whose reply got lost would retry it). Some orders are paid
(STOCK.CONFIRM), some cancelled (STOCK.REFUND), the rest never paid: their holds expire
inside Redis at the deadline, their units go back on sale, and an `expire` event goes to
the stream. A consumer group reads the stream and keeps an order book: `deduct` creates an
order, `refund` and `expire` cancel it. A payment that arrives after the deadline gets the
EXPIRED error, and the example refunds the customer's money instead (here: counts it).

At the end it checks the books: every paid order is confirmed, every other order was
cancelled exactly once (by its refund or by its expiry), the stock left plus the paid units
equal the initial stock, and the ledger (STOCK.REQUEST ... DETAIL) agrees with the book.

Exits 0 when the books balance, 1 when they do not, 2 when the server cannot be used.

    python3 orders.py [--host HOST] [--port PORT] [--orders N] [--hold-ms MS]
"""

import argparse
import os
import random
import sys
import time

try:
    import redis
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("orders.py needs redis-py: python3 -m pip install redis")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    p.add_argument("--key", default="{sku:orders}", help="the stock key")
    p.add_argument("--orders", type=int, default=200, help="orders placed")
    p.add_argument("--hold-ms", type=int, default=1500, help="time to pay, in ms")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args()


def detail(r, key, order_id):
    """STOCK.REQUEST key id DETAIL as a dict (state, quantity, deadline), or None."""
    reply = r.execute_command("STOCK.REQUEST", key, order_id, "DETAIL")
    if reply is None:
        return None
    if isinstance(reply, dict):
        items = reply.items()
    else:
        items = zip(reply[0::2], reply[1::2])
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in items
    }


class Book:
    """The order book a consumer keeps: created by `deduct`, cancelled by `refund`/`expire`."""

    def __init__(self):
        self.orders = {}
        self.cancelled_twice = []

    def apply(self, fields):
        kind = fields.get("type")
        order_id = fields.get("id")
        if kind == "deduct":
            self.orders.setdefault(order_id, "placed")
        elif kind in ("refund", "expire"):
            if self.orders.get(order_id, "").startswith("cancelled"):
                self.cancelled_twice.append(order_id)
            self.orders[order_id] = "cancelled by " + kind


def consume(r, stream, group, book):
    """Reads every new entry of the group (and acknowledges it after applying it)."""
    while True:
        reply = r.xreadgroup(group, "c1", {stream: ">"}, count=500)
        if not reply:
            return
        for _, entries in reply:
            for entry_id, raw in entries:
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                book.apply(fields)
                r.xack(stream, group, entry_id)


def main():
    args = parse_args()
    rng = random.Random(args.seed)
    r = redis.Redis(host=args.host, port=args.port, socket_timeout=10)
    try:
        r.execute_command("STOCK.SET", args.key, args.orders)
    except redis.ConnectionError as e:
        print(f"orders.py: cannot reach Redis: {e}", file=sys.stderr)
        return 2
    except redis.ResponseError as e:
        print(f"orders.py: is the fence module loaded? {e}", file=sys.stderr)
        return 2
    stream = args.key + ":events"
    group = "orders"
    r.delete(stream)
    r.xgroup_create(stream, group, id="0", mkstream=True)
    book = Book()

    # Place: every order holds one unit until its deadline; each is sent twice.
    ids = [f"order-{i}" for i in range(args.orders)]
    for order_id in ids:
        for _ in range(2):
            r.execute_command(
                "STOCK.DEDUCT", args.key, 1, "ID", order_id, "HOLD", args.hold_ms,
                "EVENTS", stream,
            )
    consume(r, stream, group, book)

    # Pay a third, cancel a sixth, leave the rest unpaid.
    paid, cancelled, unpaid = [], [], []
    for order_id in ids:
        roll = rng.random()
        if roll < 1 / 3:
            assert r.execute_command("STOCK.CONFIRM", args.key, order_id) == 1
            assert r.execute_command("STOCK.CONFIRM", args.key, order_id) == 1  # a retry
            paid.append(order_id)
        elif roll < 1 / 2:
            assert r.execute_command("STOCK.REFUND", args.key, order_id, "EVENTS", stream) == 1
            cancelled.append(order_id)
        else:
            unpaid.append(order_id)

    # Wait for the deadlines: the module returns the unpaid holds by itself.
    deadline = time.time() + args.hold_ms / 1000 + 30
    while time.time() < deadline:
        info = r.execute_command("STOCK.INFO", args.key)
        info = dict(zip(info[0::2], info[1::2])) if isinstance(info, list) else info
        if info[b"held"] == 0:
            break
        time.sleep(0.05)
    consume(r, stream, group, book)

    # A payment arriving too late: the hold already expired, so the money goes back.
    late_refunds = 0
    for order_id in unpaid[:5]:
        try:
            r.execute_command("STOCK.CONFIRM", args.key, order_id)
            print(f"orders.py: {order_id} was confirmed after its deadline", file=sys.stderr)
            return 1
        except redis.ResponseError as e:
            if not str(e).startswith("EXPIRED"):
                raise
            late_refunds += 1

    # The books.
    failures = []
    remaining = int(r.execute_command("STOCK.GET", args.key))
    if remaining + len(paid) != args.orders:
        failures.append(f"{remaining} left + {len(paid)} paid != {args.orders}")
    for order_id in paid:
        if (detail(r, args.key, order_id) or {}).get("state") != "confirmed":
            failures.append(f"{order_id} was paid but is not confirmed")
        if book.orders.get(order_id) != "placed":
            failures.append(f"{order_id} was paid but the book says {book.orders.get(order_id)}")
    for order_id, kind, state in [(i, "refund", "refunded") for i in cancelled] + [
        (i, "expire", "expired") for i in unpaid
    ]:
        if (detail(r, args.key, order_id) or {}).get("state") != state:
            failures.append(f"{order_id} is not {state}")
        if book.orders.get(order_id) != "cancelled by " + kind:
            failures.append(f"{order_id}: the book says {book.orders.get(order_id)}")
    if book.cancelled_twice:
        failures.append(f"cancelled twice: {book.cancelled_twice[:5]}")
    pending = r.xpending(stream, group)["pending"]
    if pending:
        failures.append(f"{pending} entries left unacknowledged")
    print(
        f"orders.py: {args.orders} orders: {len(paid)} paid, {len(cancelled)} cancelled, "
        f"{len(unpaid)} expired unpaid ({late_refunds} late payments refused); "
        f"{remaining} units back on sale"
    )
    for f in failures:
        print(f"orders.py: FAIL {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
