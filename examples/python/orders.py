#!/usr/bin/env python3
"""Unpaid orders give their stock back by themselves: holds with the redis_fence package.

Buyers place orders with Stock.deduct(1, id=order_id, hold=seconds, events=stream)
(STOCK.DEDUCT key 1 ID order-id HOLD ms EVENTS stream), each sent twice, as a client whose
reply got lost would retry it; Stock.request (STOCK.REQUEST ... DETAIL) shows the order held
once, with its deadline. Some orders are paid (Stock.confirm), some cancelled (Stock.refund),
the rest never paid: their holds expire inside Redis at the deadline, their units go back on
sale, and an `expire` event goes to the stream. A consumer group reads the stream and keeps
an order book: `deduct` creates an order, `refund` and `expire` cancel it. A payment that
arrives after the deadline raises HoldExpired (the EXPIRED error), and the example refunds
the customer's money instead (here: counts it).

At the end it checks the books: every paid order is confirmed, every other order was
cancelled exactly once (by its refund or by its expiry), the stock left plus the paid units
equal the initial stock, and the ledger agrees with the book.

Exits 0 when the books balance, 1 when they do not, 2 when the server cannot be used.

    python3 orders.py [--host HOST] [--port PORT] [--orders N] [--hold-ms MS]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Any

try:
    import redis
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("orders.py needs redis-py: python3 -m pip install redis")
try:
    from redis_fence import Deducted, HoldExpired, Stock
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit(
        "orders.py needs the redis_fence package: python3 -m pip install ./clients/python"
    )


def parse_args() -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument(
        "--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379"))
    )
    p.add_argument("--key", default="{sku:orders}", help="the stock key")
    p.add_argument("--orders", type=int, default=200, help="orders placed")
    p.add_argument("--hold-ms", type=int, default=1500, help="time to pay, in ms")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    if args.orders < 1 or args.hold_ms < 1:
        p.error("--orders and --hold-ms must be at least 1")
    return args


class Book:
    """The order book a consumer keeps: created by `deduct`, cancelled by `refund`/`expire`."""

    def __init__(self) -> None:
        self.orders: dict[str, str] = {}
        self.cancelled_twice: list[str] = []

    def apply(self, fields: dict[str, str]) -> None:
        kind = fields.get("type")
        order_id = fields.get("id", "")
        if kind == "deduct":
            self.orders.setdefault(order_id, "placed")
        elif kind in ("refund", "expire"):
            if self.orders.get(order_id, "").startswith("cancelled"):
                self.cancelled_twice.append(order_id)
            self.orders[order_id] = f"cancelled by {kind}"


def consume(r: redis.Redis, stream: str, group: str, book: Book) -> None:
    """Reads every new entry of the group (and acknowledges it after applying it)."""
    while True:
        # [[stream, [(entry id, {field: value})]]] (redis-py types it loosely)
        reply: Any = r.xreadgroup(group, "c1", {stream: ">"}, count=500)
        if not reply:
            return
        for _, entries in reply:
            for entry_id, raw in entries:
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                book.apply(fields)
                r.xack(stream, group, entry_id)


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    r = redis.Redis(host=args.host, port=args.port, socket_timeout=10)
    stock = Stock(r, args.key)
    try:
        stock.set(args.orders, limit=0)
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
    failures: list[str] = []
    hold = args.hold_ms / 1000  # the package takes seconds

    # Place: every order holds one unit until its deadline; each is sent twice, and the
    # ledger tells that the retry was a replay: one held entry of one unit.
    ids = [f"order-{i}" for i in range(args.orders)]
    for order_id in ids:
        first = stock.deduct(1, id=order_id, hold=hold, events=stream)
        again = stock.deduct(1, id=order_id, hold=hold, events=stream)
        if not isinstance(first, Deducted) or not isinstance(again, Deducted):
            failures.append(f"{order_id} was refused: {first}, then {again}")
            continue
        info = stock.request(order_id)
        if (
            info is None
            or (info.state, info.quantity) != ("held", 1)
            or not info.deadline_ms
        ):
            failures.append(f"{order_id}: the ledger shows {info} after the retry")
    consume(r, stream, group, book)

    # Pay a third, cancel a sixth, leave the rest unpaid.
    paid: list[str] = []
    cancelled: list[str] = []
    unpaid: list[str] = []
    for order_id in ids:
        roll = rng.random()
        if roll < 1 / 3:
            assert stock.confirm(order_id)
            assert stock.confirm(order_id)  # a retry
            paid.append(order_id)
        elif roll < 1 / 2:
            assert stock.refund(order_id, events=stream) == 1
            cancelled.append(order_id)
        else:
            unpaid.append(order_id)

    # Wait for the deadlines: the module returns the unpaid holds by itself.
    deadline = time.time() + args.hold_ms / 1000 + 30
    while time.time() < deadline:
        now = stock.info()
        if now is not None and now.held == 0:
            break
        time.sleep(0.05)
    consume(r, stream, group, book)

    # A payment arriving too late: the hold already expired, so the money goes back.
    late_refunds = 0
    for order_id in unpaid[:5]:
        try:
            stock.confirm(order_id)
            print(
                f"orders.py: {order_id} was confirmed after its deadline",
                file=sys.stderr,
            )
            return 1
        except HoldExpired as e:
            seconds, micros = r.time()  # the server's clock decides deadlines
            if (
                e.request_id != order_id
                or e.deadline_ms > seconds * 1000 + micros // 1000
            ):
                failures.append(
                    f"{order_id}: {e} names another order or a future deadline"
                )
            late_refunds += 1

    # The books.
    remaining = stock.get()
    if remaining is None or remaining + len(paid) != args.orders:
        failures.append(f"{remaining} left + {len(paid)} paid != {args.orders}")
    for order_id in paid:
        request = stock.request(order_id)
        if request is None or request.state != "confirmed":
            failures.append(f"{order_id} was paid but is not confirmed")
        if book.orders.get(order_id) != "placed":
            failures.append(
                f"{order_id} was paid but the book says {book.orders.get(order_id)}"
            )
    for order_id, kind, state in [(i, "refund", "refunded") for i in cancelled] + [
        (i, "expire", "expired") for i in unpaid
    ]:
        request = stock.request(order_id)
        if request is None or request.state != state or request.holds != 0:
            failures.append(f"{order_id} is not {state}")
        if book.orders.get(order_id) != f"cancelled by {kind}":
            failures.append(f"{order_id}: the book says {book.orders.get(order_id)}")
    if book.cancelled_twice:
        failures.append(f"cancelled twice: {book.cancelled_twice[:5]}")
    summary = stock.info()
    if summary is None or (summary.deducted, summary.held, summary.requests) != (
        len(paid),
        0,
        args.orders,
    ):
        failures.append(
            f"STOCK.INFO {summary}: expected {len(paid)} deducted, none held"
        )
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
    r.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
