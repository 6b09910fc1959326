"""redis_fence.Stock (sync) against real servers: every method as the README's STOCK.* contract
says, under RESP2 and RESP3, bytes and str replies, and on Redis Cluster.

Holds that must run out are short (50 ms) and the tests wait on the server's clock (TIME) until
their deadline has passed, never by racing a sleep against it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from _servers import Server, raw_client
from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

import redis_fence
import redis_fence.asyncio
from redis_fence import (
    AlreadyRefunded,
    BuyerRequired,
    Cart,
    CommandError,
    Deducted,
    Events,
    FenceError,
    HoldExpired,
    LedgerFull,
    LimitExceeded,
    RequestInfo,
    SoldOut,
    StaleToken,
    Stock,
    StockInfo,
    WrongType,
)

PLAIN_ONLY = "ERR this command needs a stock created by STOCK.SET, not a plain string"
BUYER = "Jo\u00e9 \u00d1o \u4e70\u5bb6 7"  # spaces and non-ASCII


# ---- helpers ---------------------------------------------------------------------------------


def server_ms(client: Any) -> int:
    """The server's clock (TIME), in Unix milliseconds."""
    sec, usec = client.execute_command("TIME")
    return int(sec) * 1000 + int(usec) // 1000


def wait_server_past(client: Any, deadline_ms: int, timeout: float = 10.0) -> None:
    """Waits until the server's clock is past ``deadline_ms``."""
    give_up = time.monotonic() + timeout
    while True:
        now = server_ms(client)
        if now > deadline_ms:
            return
        assert time.monotonic() < give_up, f"server clock stuck at {now} <= {deadline_ms}"
        time.sleep(min(0.05, (deadline_ms - now + 1) / 1000))


def shown(value: str) -> str:
    """An id as the module's error messages show it: bytes that are not printable ASCII, and
    ``'``, as ``\\xNN``; cut after 64 bytes and followed by ``...``."""
    data = value.encode()
    cut = len(data) > 64
    text = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x27 else f"\\x{b:02x}" for b in data[:64])
    return text + "..." if cut else text


def stock_calls(server: Server) -> int:
    """How many STOCK.* commands the server has run (INFO commandstats)."""
    total = 0
    for name, value in server.info("commandstats").items():
        if name.lower().startswith("cmdstat_stock."):
            fields = dict(part.split("=", 1) for part in value.split(","))
            total += int(fields["calls"])
    return total


def stream(client: Any, key: str) -> list[list[tuple[str, str]]]:
    """The stream's entries as lists of (field, value), in order."""
    out = []
    for _id, fields in client.xrange(key):
        out.append([(to_str(k), to_str(v)) for k, v in fields.items()])
    return out


def to_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def ex(e: BaseException) -> tuple[Any, ...]:
    """An exception as comparable data: its class and every attribute the package sets."""
    names = "code message token highest buyer holds limit index key request_id deadline_ms"
    return (type(e).__name__, *(getattr(e, n, None) for n in names.split()))


# ---- set, set_limit, add, get ----------------------------------------------------------------


def test_set_and_get(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    assert s.get() is None
    assert s.info() is None
    s.set(10)
    assert s.get() == 10
    assert r.execute_command("TYPE", "sku") == b"fence-stk"
    s.set(0)
    assert s.get() == 0
    s.set((1 << 63) - 1)
    assert s.get() == (1 << 63) - 1


def test_set_limit_kept_when_omitted_zero_clears(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10, limit=2)
    info = s.info()
    assert info is not None and (info.available, info.limit) == (10, 2)
    assert s.deduct(1, id="o1", buyer="u") == Deducted(9)
    s.set(5)  # a new sale: the limit is kept, the ledger and buyers cleared
    info = s.info()
    assert info is not None and (info.available, info.limit, info.requests, info.buyers) == (
        5,
        2,
        0,
        0,
    )
    s.set(5, limit=0)
    info = s.info()
    assert info is not None and info.limit == 0
    assert s.deduct(1) == Deducted(4)  # no limit: no buyer needed


def test_set_limit_method(r: redis.Redis) -> None:
    missing = Stock(r, "missing")
    assert missing.set_limit(3) is False
    assert r.exists("missing") == 0
    s = Stock(r, "sku")
    s.set(10)
    assert s.set_limit(3) is True
    info = s.info()
    assert info is not None and info.limit == 3
    with pytest.raises(BuyerRequired):
        s.deduct(1, id="o")
    assert s.set_limit(0) is True
    info = s.info()
    assert info is not None and info.limit == 0
    assert s.deduct(1, id="o") == Deducted(9)


def test_add(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    assert s.add(5) == 5  # creates the stock
    assert r.execute_command("TYPE", "sku") == b"fence-stk"
    assert s.add(3) == 8
    assert s.add(2, id="restock-1") == 10
    assert s.add(2, id="restock-1") == 10  # a replay adds nothing
    assert s.add(99, id="restock-1") == 10  # whatever the quantity
    assert s.deduct(4) == Deducted(6)
    assert s.add(1, id="restock-1") == 6  # the current quantity
    info = s.info()
    assert info is not None and (info.available, info.restocks) == (6, 1)
    assert s.add(1, id="restock-2") == 7
    info = s.info()
    assert info is not None and info.restocks == 2


# ---- deduct ----------------------------------------------------------------------------------


def test_deduct_and_sold_out(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(5)
    result = s.deduct(2)
    assert result == Deducted(3) and result.ok is True
    assert s.deduct() == Deducted(2)  # quantity defaults to 1
    out = s.deduct(3)
    assert out == SoldOut() and out.ok is False
    assert s.get() == 2
    assert s.deduct(2) == Deducted(0)
    assert s.deduct(1) == SoldOut()
    missing = Stock(r, "missing")
    assert missing.deduct(1) == SoldOut()
    assert missing.deduct(1, id="o") == SoldOut()
    assert r.exists("missing") == 0


def test_sold_out_id_can_be_retried(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(1)
    assert s.deduct(2, id="o") == SoldOut()
    assert s.request("o") is None  # only successful deductions enter the ledger
    assert s.deduct(1, id="o") == Deducted(0)


def test_replay_looks_fresh_request_tells_apart(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    fresh = s.deduct(2, id="order-1")
    assert fresh == Deducted(8)
    replay = s.deduct(5, id="order-1")  # the quantity of a replay is ignored
    assert replay == fresh  # the same answer on the wire
    assert s.get() == 8
    req = s.request("order-1")
    assert req == RequestInfo(state="deducted", quantity=2, deadline_ms=None, buyer=None)
    assert req is not None and req.holds == 2
    assert s.refund("order-1") == 2
    assert s.deduct(2, id="order-1") == Deducted(10)  # still a replay: nothing taken
    assert s.get() == 10
    req = s.request("order-1")
    assert req == RequestInfo(state="refunded", quantity=2)
    assert req is not None and req.holds == 0
    assert s.request("order-2") is None
    assert Stock(r, "missing").request("order-1") is None


def test_limit_exceeded_buyer_with_spaces_and_non_ascii(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10, limit=2)
    assert s.deduct(2, id="a", buyer=BUYER) == Deducted(8)
    with pytest.raises(LimitExceeded) as info:
        s.deduct(1, id="b", buyer=BUYER)
    e = info.value
    assert (e.buyer, e.holds, e.limit, e.index, e.key) == (shown(BUYER), 2, 2, None, None)
    assert "\\x" in shown(BUYER) and " " in shown(BUYER)
    assert e.code == "LIMIT"
    assert e.message == f"LIMIT buyer {shown(BUYER)} has 2 of at most 2"
    assert isinstance(e, CommandError) and isinstance(e, rx.ResponseError)
    assert isinstance(e, FenceError) and isinstance(e, redis.RedisError)
    # Nothing changed.
    assert s.get() == 8
    assert s.request("b") is None
    assert s.buyer(BUYER) == 2
    assert s.buyer(BUYER.encode()) == 2
    # A refund gives the allowance back.
    assert s.refund("a") == 2
    assert s.deduct(1, id="b", buyer=BUYER) == Deducted(9)
    req = s.request("b")
    assert req is not None and req.buyer == BUYER


def test_limit_exceeded_long_buyer_is_cut(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10, limit=1)
    buyer = "b" * 70
    assert s.deduct(1, id="a", buyer=buyer) == Deducted(9)
    with pytest.raises(LimitExceeded) as info:
        s.deduct(1, id="c", buyer=buyer)
    assert info.value.buyer == "b" * 64 + "..."
    assert (info.value.holds, info.value.limit) == (1, 1)


def test_limit_checked_before_quantity(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(1, limit=1)
    assert s.deduct(1, id="a", buyer="u") == Deducted(0)
    with pytest.raises(LimitExceeded):
        s.deduct(1, id="b", buyer="u")  # at the limit and sold out: LIMIT
    assert s.deduct(1, id="c", buyer="v") == SoldOut()


def test_buyer_required(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10, limit=3)
    for call in (lambda: s.deduct(1), lambda: s.deduct(1, id="o")):
        with pytest.raises(BuyerRequired) as info:
            call()
        assert info.value.limit == 3
        assert info.value.code == "ERR"
        assert info.value.message.startswith("ERR this stock limits each buyer to 3 units")
        assert isinstance(info.value, rx.ResponseError)
    assert s.get() == 10
    assert s.request("o") is None


def test_buyer_recorded_without_limit(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    assert s.deduct(3, id="a", buyer="u") == Deducted(7)
    assert s.buyer("u") == 3
    assert s.buyer("nobody") == 0
    assert Stock(r, "missing").buyer("u") is None
    assert s.set_limit(3) is True  # a limit set later counts what was bought
    with pytest.raises(LimitExceeded) as info:
        s.deduct(1, id="b", buyer="u")
    assert (info.value.buyer, info.value.holds, info.value.limit) == ("u", 3, 3)


def test_replay_counts_nothing_again(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10, limit=1)
    assert s.deduct(1, id="a", buyer="u") == Deducted(9)
    assert s.deduct(1, id="a", buyer="u") == Deducted(9)
    assert s.deduct(1, id="a", buyer="other") == Deducted(9)
    req = s.request("a")
    assert req is not None and req.buyer == "u"
    assert (s.buyer("u"), s.buyer("other")) == (1, 0)


# ---- hold, confirm, refund -------------------------------------------------------------------


@pytest.mark.parametrize(("hold", "ms"), [(2.5, 2500), (0.25, 250), (60, 60000)])
def test_hold_deadline_is_server_clock_plus_hold(r: redis.Redis, hold: float, ms: int) -> None:
    s = Stock(r, "sku")
    s.set(10)
    before = server_ms(r)
    assert s.deduct(2, id="h", hold=hold) == Deducted(8)
    after = server_ms(r)
    req = s.request("h")
    assert req is not None and req.state == "held" and req.quantity == 2 and req.holds == 2
    assert req.deadline_ms is not None
    # The deadline is the server's clock at the deduction plus the hold (1 ms of margin for
    # the two clocks' rounding).
    assert before + ms - 1 <= req.deadline_ms <= after + ms + 1
    info = s.info()
    assert info is not None
    assert (info.held, info.held_units, info.next_deadline_ms) == (1, 2, req.deadline_ms)
    # A replay with another hold does not move the deadline.
    assert s.deduct(2, id="h", hold=600) == Deducted(8)
    again = s.request("h")
    assert again is not None and again.deadline_ms == req.deadline_ms


def test_confirm(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    assert s.deduct(1, id="h", hold=60, buyer="u") == Deducted(9)
    assert s.confirm("h") is True
    assert s.confirm("h") is True  # idempotent
    assert s.request("h") == RequestInfo(state="confirmed", quantity=1, buyer="u")
    info = s.info()
    assert info is not None and (info.held, info.held_units, info.next_deadline_ms) == (0, 0, 0)
    assert s.confirm("unknown") is False
    assert Stock(r, "missing").confirm("h") is False
    assert s.deduct(2, id="d") == Deducted(7)
    assert s.confirm("d") is True  # never held: sold anyway
    assert s.request("d") == RequestInfo(state="deducted", quantity=2)
    # A confirmed entry can still be refunded (a paid order cancelled later).
    assert s.refund("h") == 1
    assert s.get() == 8


def test_confirm_after_the_hold_expired(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    assert s.deduct(3, id="late", hold=0.05, buyer="u") == Deducted(7)
    req = s.request("late")
    assert req is not None and req.state == "held" and req.deadline_ms is not None
    wait_server_past(r, req.deadline_ms)
    with pytest.raises(HoldExpired) as info:
        s.confirm("late")
    e = info.value
    assert (e.request_id, e.deadline_ms, e.code) == ("late", req.deadline_ms, "EXPIRED")
    assert e.message == f"EXPIRED request late expired at {req.deadline_ms}"
    assert isinstance(e, rx.ResponseError) and isinstance(e, FenceError)
    assert s.get() == 10  # the units came back
    after = s.request("late")
    assert after == RequestInfo(state="expired", quantity=3, buyer="u")
    assert after is not None and after.holds == 0
    assert s.buyer("u") == 0
    assert s.refund("late") == 0  # they come back once
    assert s.get() == 10
    with pytest.raises(HoldExpired):
        s.confirm("late")  # and it stays so


def test_confirm_of_a_refunded_request(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    assert s.deduct(2, id="o 1", hold=60) == Deducted(8)
    assert s.refund("o 1") == 2
    with pytest.raises(AlreadyRefunded) as info:
        s.confirm("o 1")
    assert (info.value.request_id, info.value.code) == ("o 1", "REFUNDED")
    assert info.value.message == "REFUNDED request o 1 was refunded"
    assert isinstance(info.value, rx.ResponseError)
    assert s.get() == 10


def test_refund_exactly_once(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    assert s.deduct(3, id="o") == Deducted(7)
    assert s.refund("o") == 3
    assert s.get() == 10
    assert s.refund("o") == 0
    assert s.refund(b"o") == 0
    assert s.get() == 10
    assert s.refund("unknown") == 0
    assert Stock(r, "missing").refund("o") == 0
    assert r.exists("missing") == 0
    info = s.info()
    assert info is not None and (info.deducted, info.requests) == (0, 1)


# ---- fence -----------------------------------------------------------------------------------


def test_fence(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    assert s.deduct(1, fence=100) == Deducted(9)
    assert s.deduct(1, fence=100) == Deducted(8)  # equal: accepted
    with pytest.raises(StaleToken) as info:
        s.deduct(1, id="o", fence=99)
    e = info.value
    assert (e.token, e.highest, e.index, e.key, e.code) == (99, 100, None, None, "STALE")
    assert e.message == "STALE fencing token 99 is below the highest accepted token 100"
    assert isinstance(e, rx.ResponseError) and isinstance(e, FenceError)
    assert s.get() == 8 and s.request("o") is None
    assert s.deduct(1, id="o", fence=150) == Deducted(7)
    assert s.deduct(1, id="o", fence=200) == Deducted(7)  # a replay raises nothing
    info2 = s.info()
    assert info2 is not None and info2.fence == 150
    s.set(10)  # a new sale keeps the fence
    with pytest.raises(StaleToken) as info3:
        s.deduct(1, fence=149)
    assert (info3.value.token, info3.value.highest) == (149, 150)


def test_fence_with_a_lock_token(r: redis.Redis) -> None:
    s = Stock(r, "{sku}")
    s.set(10)
    with redis_fence.Lock(r, "{sku}:lock", ttl=10) as old:
        assert s.deduct(1, id="a", fence=old) == Deducted(9)
    with redis_fence.Lock(r, "{sku}:lock", ttl=10) as new:
        assert s.deduct(1, id="b", fence=new) == Deducted(8)
    with pytest.raises(StaleToken) as info:
        s.deduct(1, id="c", fence=old)
    assert (info.value.token, info.value.highest) == (old, new)


# ---- events ----------------------------------------------------------------------------------


def test_events_stream_key(r: redis.Redis) -> None:
    s = Stock(r, "{sku}")
    s.set(3)
    assert s.deduct(2, id="e1", buyer="u 1", fence=7, events="{sku}:ev") == Deducted(1)
    assert stream(r, "{sku}:ev") == [
        [
            ("type", "deduct"),
            ("sku", "{sku}"),
            ("quantity", "2"),
            ("remaining", "1"),
            ("id", "e1"),
            ("buyer", "u 1"),
            ("fence", "7"),
        ]
    ]
    # Not a replay, not a sold-out call, not a refused call.
    assert s.deduct(2, id="e1", events="{sku}:ev") == Deducted(1)
    assert s.deduct(5, id="e9", events="{sku}:ev") == SoldOut()
    with pytest.raises(StaleToken):
        s.deduct(1, id="e8", fence=3, events="{sku}:ev")
    assert r.xlen("{sku}:ev") == 1
    assert s.deduct(1, events="{sku}:ev") == Deducted(0)  # without ID: no id field
    entries = stream(r, "{sku}:ev")
    assert entries[1:] == [
        [("type", "deduct"), ("sku", "{sku}"), ("quantity", "1"), ("remaining", "0")],
        [("type", "soldout"), ("sku", "{sku}")],
    ]
    assert s.refund("e1", events="{sku}:ev") == 2
    assert s.refund("e1", events="{sku}:ev") == 0
    entries = stream(r, "{sku}:ev")
    assert len(entries) == 4
    assert entries[3] == [
        ("type", "refund"),
        ("sku", "{sku}"),
        ("id", "e1"),
        ("quantity", "2"),
        ("remaining", "2"),
    ]


def test_events_object_and_maxlen(r: redis.Redis) -> None:
    s = Stock(r, "{sku}")
    s.set(100)
    for i in range(5):
        s.deduct(1, id=f"a{i}", events=Events("{sku}:exact", maxlen=2))
        s.deduct(1, id=f"b{i}", events=Events("{sku}:approx", maxlen=2, approximate=True))
        s.deduct(1, id=f"c{i}", events=Events("{sku}:all"))
    assert r.xlen("{sku}:exact") == 2  # MAXLEN = 2
    # MAXLEN ~ 2 trims whole stream nodes only: the one node of 5 entries stays.
    assert r.xlen("{sku}:approx") == 5
    assert r.xlen("{sku}:all") == 5
    last = stream(r, "{sku}:exact")[-1]
    assert ("id", "a4") in last and ("remaining", str(100 - 13)) in last
    assert s.refund("a4", events=Events("{sku}:exact", maxlen=1)) == 1
    entries = stream(r, "{sku}:exact")
    assert len(entries) == 1 and entries[0][0] == ("type", "refund")


def test_events_on_a_key_of_another_type(r: redis.Redis) -> None:
    s = Stock(r, "{sku}")
    s.set(3)
    r.rpush("{sku}:list", "x")
    with pytest.raises(WrongType):
        s.deduct(1, id="o", events="{sku}:list")
    assert s.get() == 3 and s.request("o") is None


# ---- request, buyer, info --------------------------------------------------------------------


def test_request_detail_fields(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    s.deduct(1, id="plain")
    s.deduct(2, id="bought", buyer=BUYER)
    s.deduct(3, id="held", buyer="u", hold=60)
    assert s.request("plain") == RequestInfo("deducted", 1, None, None)
    assert s.request("bought") == RequestInfo("deducted", 2, None, BUYER)
    held = s.request("held")
    assert held is not None and (held.state, held.quantity, held.buyer) == ("held", 3, "u")
    assert isinstance(held.deadline_ms, int) and held.deadline_ms > server_ms(r)


def test_info_every_field(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(20, limit=5)
    assert s.add(3, id="r1") == 23
    assert s.deduct(2, id="a", buyer="u1") == Deducted(21)
    assert s.deduct(3, id="b", buyer="u2", hold=60, fence=42) == Deducted(18)
    assert s.deduct(1, id="c", buyer="u1", hold=120) == Deducted(17)
    assert s.refund("a") == 2
    b = s.request("b")
    assert b is not None and b.deadline_ms is not None
    assert s.info() == StockInfo(
        available=19,
        deducted=4,
        requests=3,
        fence=42,
        restocks=1,
        held=2,
        held_units=4,
        next_deadline_ms=b.deadline_ms,
        limit=5,
        buyers=2,
        plain=False,
        extra={},
    )


def test_info_counts_a_due_hold_as_returned(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    s.deduct(4, id="h", hold=0.05)
    req = s.request("h")
    assert req is not None and req.deadline_ms is not None
    wait_server_past(r, req.deadline_ms)
    info = s.info()
    assert info is not None
    assert (info.available, info.deducted, info.held, info.held_units) == (10, 0, 0, 0)
    assert s.request("h") == RequestInfo("expired", 4)


# ---- plain integer strings -------------------------------------------------------------------


def test_plain_integer_string(r: redis.Redis) -> None:
    r.set("p", "10")
    s = Stock(r, "p")
    assert s.info() == StockInfo(available=10, plain=True)
    assert s.get() == 10
    assert s.deduct(3) == Deducted(7)
    assert r.get("p") == b"7"
    assert r.execute_command("TYPE", "p") == b"string"
    assert s.add(5) == 12
    assert s.deduct(100) == SoldOut()
    assert s.deduct(12, events="pev") == Deducted(0)
    assert stream(r, "pev") == [
        [("type", "deduct"), ("sku", "p"), ("quantity", "12"), ("remaining", "0")],
        [("type", "soldout"), ("sku", "p")],
    ]
    calls: list[Callable[[], object]] = [
        lambda: s.deduct(1, id="o"),
        lambda: s.deduct(1, fence=5),
        lambda: s.add(1, id="r"),
        lambda: s.set_limit(1),
        lambda: s.refund("o"),
        lambda: s.confirm("o"),
        lambda: s.request("o"),
        lambda: s.buyer("u"),
    ]
    for call in calls:
        with pytest.raises(CommandError) as info:
            call()
        assert type(info.value) is CommandError
        assert (info.value.code, info.value.message) == ("ERR", PLAIN_ONLY)
    assert r.get("p") == b"0"
    with pytest.raises(WrongType):
        s.set(5)  # STOCK.SET never converts a user's key
    r.set("bad", "abc")
    with pytest.raises(CommandError) as bad:
        Stock(r, "bad").get()
    assert bad.value.message == "ERR value is not an integer or out of range"


def test_plain_negative_integer(r: redis.Redis) -> None:
    r.set("p", "-2")
    s = Stock(r, "p")
    assert s.get() == -2
    assert s.deduct(1) == SoldOut()
    assert s.add(5) == 3


# ---- wrong types -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lock", "list"])
def test_wrong_type(r: redis.Redis, kind: str) -> None:
    if kind == "lock":
        assert r.execute_command("LOCK.ACQUIRE", "k", "owner", 30000)
    else:
        r.rpush("k", "x")
    s = Stock(r, "k")
    calls: list[Callable[[], object]] = [
        lambda: s.set(1),
        lambda: s.set_limit(1),
        lambda: s.add(1),
        lambda: s.get(),
        lambda: s.deduct(1),
        lambda: s.deduct(1, id="o"),
        lambda: s.refund("o"),
        lambda: s.confirm("o"),
        lambda: s.request("o"),
        lambda: s.buyer("u"),
        lambda: s.info(),
    ]
    for call in calls:
        with pytest.raises(WrongType) as info:
            call()
        e = info.value
        assert e.code == "WRONGTYPE"
        assert e.message == "WRONGTYPE Operation against a key holding the wrong kind of value"
        assert isinstance(e, CommandError) and isinstance(e, rx.ResponseError)
        assert isinstance(e, FenceError) and isinstance(e, redis.RedisError)


# ---- ledger bound, other errors --------------------------------------------------------------


@pytest.fixture
def small_ledger(r: redis.Redis) -> Any:
    old = to_str(next(iter(r.config_get("fence.max-ledger-entries").values())))
    r.config_set("fence.max-ledger-entries", 1)
    yield
    r.config_set("fence.max-ledger-entries", old)


def test_ledger_full(r: redis.Redis, small_ledger: None) -> None:
    s = Stock(r, "sku")
    s.set(10)
    assert s.deduct(1, id="a") == Deducted(9)
    with pytest.raises(LedgerFull) as info:
        s.deduct(1, id="b")
    e = info.value
    assert (e.code, e.index, e.key) == ("ERR", None, None)
    assert e.message.startswith("ERR request ledger is full (1 entries")
    assert s.deduct(1, id="a") == Deducted(9)  # a replay still answers
    assert s.deduct(1) == Deducted(8)  # without ID: never refused
    assert s.add(1, id="r1") == 9
    with pytest.raises(LedgerFull) as restock:
        s.add(1, id="r2")
    assert restock.value.message.startswith("ERR restock ledger is full (1 entries")
    assert s.get() == 9


def test_server_side_argument_errors(r: redis.Redis) -> None:
    s = Stock(r, "sku")
    s.set(10)
    with pytest.raises(CommandError) as info:
        s.deduct(1, id="o", hold=10**9)  # above fence.max-hold-ms
    assert type(info.value) is CommandError
    assert info.value.message.startswith("ERR hold ms must be an integer from 1 to ")
    with pytest.raises(CommandError) as future:
        s.deduct(1, fence=(server_ms(r) + 2 * 86400 * 1000) * 1000)
    assert future.value.message == ("ERR token is more than 24 hours ahead of this server's clock")
    assert s.get() == 10


def test_an_unknown_error_code_is_kept(r: redis.Redis) -> None:
    r.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(CommandError) as info:
            Stock(r, "sku").set(1)
    finally:
        r.config_set("min-replicas-to-write", 0)
    assert r.exists("sku") == 0
    assert info.value.code == "NOREPLICAS"
    assert info.value.message.startswith("NOREPLICAS ")


# ---- bad arguments: refused before anything is sent ------------------------------------------


def test_bad_arguments_send_nothing(r: redis.Redis, server: Server) -> None:
    s = Stock(r, "sku")
    s.set(5, limit=2)
    bad: list[tuple[Callable[[], object], type]] = [
        (lambda: s.deduct(0), ValueError),
        (lambda: s.deduct(-3), ValueError),
        (lambda: s.deduct(1 << 63), ValueError),
        (lambda: s.deduct(True), TypeError),
        (lambda: s.deduct(1, fence=-1), ValueError),
        (lambda: s.deduct(1, fence=0), ValueError),
        (lambda: s.deduct(1, fence=False), TypeError),
        (lambda: s.deduct(1, id="o", hold=0), ValueError),
        (lambda: s.deduct(1, id="o", hold=-1.5), ValueError),
        (lambda: s.deduct(1, id=""), ValueError),
        (lambda: s.deduct(1, id=b""), ValueError),
        (lambda: s.deduct(1, buyer="u"), ValueError),
        (lambda: s.deduct(1, hold=5), ValueError),
        (lambda: s.deduct(1, id="o", buyer=""), ValueError),
        (lambda: s.deduct(1, id="o", events=Events("ev", maxlen=-1)), ValueError),
        (lambda: s.set(-1), ValueError),
        (lambda: s.set(1, limit=-1), ValueError),
        (lambda: s.set(True), TypeError),
        (lambda: s.set_limit(-1), ValueError),
        (lambda: s.add(0), ValueError),
        (lambda: s.add(1, id=""), ValueError),
        (lambda: s.refund(""), ValueError),
        (lambda: s.confirm(""), ValueError),
        (lambda: s.request(""), ValueError),
        (lambda: s.buyer(""), ValueError),
    ]
    before = stock_calls(server)
    for call, error in bad:
        with pytest.raises(error):
            call()
    assert stock_calls(server) == before, "a refused call reached the server"
    assert s.get() == 5
    assert stock_calls(server) == before + 1  # the counter does count what is sent


# ---- RESP2 / RESP3, bytes / str: the same results --------------------------------------------


def comparable(value: Any) -> Any:
    """A result as data that compares equal from run to run: a deadline (which differs) as
    whether there is one."""
    if isinstance(value, RequestInfo):
        has_deadline = value.deadline_ms is not None
        return (RequestInfo(value.state, value.quantity, None, value.buyer), has_deadline)
    if isinstance(value, StockInfo):
        return {**vars(value), "next_deadline_ms": value.next_deadline_ms > 0}
    if isinstance(value, tuple) and value and isinstance(value[0], (RequestInfo, type(None))):
        return tuple(comparable(v) for v in value)
    return value


def scenario(client: Any) -> list[Any]:
    """Every method once or more; results as comparable data (deadlines as booleans)."""
    out: list[Any] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            value = call()
        except FenceError as e:
            out.append(ex(e))
            return
        out.append(comparable(value))

    s = Stock(client, "{p}")
    run(lambda: s.set(10, limit=2))
    run(lambda: s.info())
    run(lambda: s.deduct(1, id="a", buyer=BUYER))
    run(lambda: s.deduct(2, id="b", buyer=BUYER))
    run(lambda: s.deduct(1))
    run(lambda: s.deduct(1, id="a", buyer="x"))
    run(lambda: s.request("a"))
    run(lambda: s.request("zz"))
    run(lambda: s.deduct(1, id="h", buyer="u2", hold=60, fence=5, events="{p}:ev"))
    run(lambda: s.request("h"))
    run(lambda: s.info())
    run(lambda: s.confirm("h"))
    run(lambda: s.confirm("nope"))
    run(lambda: s.refund("a"))
    run(lambda: s.refund("a"))
    run(lambda: s.confirm("a"))
    run(lambda: s.buyer(BUYER))
    run(lambda: s.buyer("u2"))
    run(lambda: s.buyer("none"))
    run(lambda: s.get())
    run(lambda: s.set_limit(0))
    run(lambda: s.add(5, id="r"))
    run(lambda: s.add(5, id="r"))
    run(lambda: s.deduct(100))
    run(lambda: s.deduct(1, fence=4))
    run(lambda: s.deduct(1, id="x", hold=0.05))
    run(lambda: s.info())
    req = s.request("x")
    assert req is not None and req.deadline_ms is not None
    wait_server_past(client, req.deadline_ms)
    try:
        s.confirm("x")
        out.append("confirmed")
    except HoldExpired as e:
        # The deadline differs from run to run: checked here, compared without it.
        assert e.deadline_ms == req.deadline_ms
        assert e.message == f"EXPIRED request x expired at {req.deadline_ms}"
        out.append(("HoldExpired", e.code, e.request_id))
    run(lambda: s.request("x"))
    m = Stock(client, "{p}:missing")
    run(lambda: m.get())
    run(lambda: m.info())
    run(lambda: m.request("a"))
    run(lambda: m.buyer("a"))
    run(lambda: m.set_limit(1))
    run(lambda: m.deduct(1))
    run(lambda: m.refund("a"))
    run(lambda: m.confirm("a"))
    client.set("{p}:plain", "5")
    pl = Stock(client, "{p}:plain")
    run(lambda: pl.info())
    run(lambda: pl.deduct(2))
    run(lambda: pl.get())
    run(lambda: pl.request("a"))
    client.rpush("{p}:list", "x")
    run(lambda: Stock(client, "{p}:list").get())
    return out


def test_results_identical_across_protocols(r: redis.Redis, server: Server) -> None:
    results = {}
    for protocol in (2, 3):
        for decode in (False, True):
            r.flushall()
            client = server.client(protocol=protocol, decode_responses=decode)
            try:
                # The client really speaks what it says.
                assert to_str(client.client_info()["resp"]) == str(protocol)
                results[(protocol, decode)] = scenario(client)
            finally:
                client.close()
    first = results[(2, False)]
    assert len(first) == 42
    for variant, got in results.items():
        assert got == first, variant
    # And the scenario saw what it should (spot checks).
    assert first[2] == Deducted(9)
    assert first[3][0] == "LimitExceeded" and first[4][0] == "BuyerRequired"
    assert first[15][0] == "AlreadyRefunded" and first[24][0] == "StaleToken"
    assert first[27][0] == "HoldExpired"


# ---- int ids and buyers -----------------------------------------------------------------------


def test_int_ids_and_buyers_are_their_digits(r: redis.Redis, server: Server) -> None:
    s = Stock(r, "sku")
    s.set(10, limit=3)
    assert s.deduct(1, id=1001, buyer=7) == Deducted(9)
    entry = RequestInfo("deducted", 1, None, "7")
    assert s.request(1001) == entry
    # The same entry under its digits: an int is sent as its decimal string.
    assert s.request("1001") == entry and s.request(b"1001") == entry
    assert s.deduct(1, id="1001", buyer="7") == Deducted(9)  # a replay, not a second unit
    assert s.buyer(7) == 1 and s.buyer("7") == 1
    assert s.deduct(2, id=1002, buyer=7, hold=60) == Deducted(7)
    assert s.confirm(1002) is True and s.buyer(7) == 3
    assert s.refund(1001) == 1 and s.request("1001") == RequestInfo("refunded", 1, None, "7")
    assert s.add(5, id=77) == 13
    assert s.add(5, id="77") == 13  # the same restock id: at most once
    before = stock_calls(server)
    for call in (
        lambda: s.deduct(1, id=True),
        lambda: s.deduct(1, id="o", buyer=False),
        lambda: s.request(True),
        lambda: s.refund(False),
        lambda: s.confirm(True),
        lambda: s.buyer(True),
        lambda: s.add(1, id=True),
    ):
        with pytest.raises(TypeError):
            call()
    assert stock_calls(server) == before, "a refused call reached the server"


# ---- pipelines are refused -------------------------------------------------------------------


def test_pipelines_are_refused(r: redis.Redis, server: Server) -> None:
    """A pipeline answers only at execute(): no result (nor a lock's decision) can be read
    from its calls, so Stock, Cart and Lock refuse one, sync or asyncio, before anything."""
    before = stock_calls(server)
    for transaction in (False, True):
        with r.pipeline(transaction=transaction) as pipe:
            with pytest.raises(TypeError, match="pipeline"):
                Stock(pipe, "sku")
            with pytest.raises(TypeError, match="pipeline"):
                Cart(pipe, {"{c}:a": 1})
            with pytest.raises(TypeError, match="pipeline"):
                redis_fence.Lock(pipe, "lock")
            assert len(pipe.command_stack) == 0

    async def main() -> None:
        client = redis.asyncio.Redis(host=server.host, port=server.port)
        try:
            async with client.pipeline() as pipe:
                with pytest.raises(TypeError, match="pipeline"):
                    redis_fence.asyncio.Stock(pipe, "sku")
                with pytest.raises(TypeError, match="pipeline"):
                    redis_fence.asyncio.Cart(pipe, {"{c}:a": 1})
                with pytest.raises(TypeError, match="pipeline"):
                    redis_fence.asyncio.Lock(pipe, "lock")
                assert len(pipe.command_stack) == 0
        finally:
            await client.aclose()

    asyncio.run(main())
    assert stock_calls(server) == before
    assert r.execute_command("DBSIZE") == 0


# ---- Redis Cluster ---------------------------------------------------------------------------


def _keys_on_every_master(cluster: Any, rc: RedisCluster) -> dict[int, str]:
    keys: dict[int, str] = {}
    for i in range(500):
        key = f"{{sku:{i}}}"
        keys.setdefault(cluster.node_for_slot(rc.keyslot(key)).port, key)
        if len(keys) == len(cluster.nodes):
            break
    assert len(keys) == len(cluster.nodes)
    return keys


def test_cluster_stock_methods_in_every_slot(cluster: Any, rc: RedisCluster) -> None:
    keys = _keys_on_every_master(cluster, rc)
    for port, key in keys.items():
        s = Stock(rc, key)
        assert s.get() is None
        s.set(10, limit=3)
        with raw_client("127.0.0.1", port) as node:
            assert node.execute_command("STOCK.GET", key) == 10  # on the slot's master
        assert s.add(2, id="r") == 12
        assert s.add(2, id="r") == 12
        assert s.deduct(2, id="a", buyer=BUYER, events=f"{key}:ev") == Deducted(10)
        assert s.deduct(2, id="a", buyer=BUYER) == Deducted(10)
        assert s.deduct(1, id="h", buyer="u", hold=60, fence=9) == Deducted(9)
        with pytest.raises(LimitExceeded) as limit:
            s.deduct(2, id="c", buyer=BUYER)
        assert (limit.value.buyer, limit.value.holds, limit.value.limit) == (shown(BUYER), 2, 3)
        with pytest.raises(BuyerRequired):
            s.deduct(1, id="d")
        with pytest.raises(StaleToken) as stale:
            s.deduct(1, id="d", buyer="v", fence=8)
        assert (stale.value.token, stale.value.highest) == (8, 9)
        assert s.request("a") == RequestInfo("deducted", 2, None, BUYER)
        assert s.buyer(BUYER) == 2
        assert s.confirm("h") is True
        assert s.refund("a") == 2
        assert s.refund("a") == 0
        with pytest.raises(AlreadyRefunded):
            s.confirm("a")
        assert s.set_limit(0) is True
        assert s.deduct(100) == SoldOut()
        info = s.info()
        assert info is not None
        assert (info.available, info.deducted, info.requests, info.fence) == (11, 1, 2, 9)
        assert (info.restocks, info.limit, info.buyers) == (1, 0, 2)
        assert [e[0] for e in stream(rc, f"{key}:ev")] == [("type", "deduct")]
        assert Stock(rc, f"{key}:missing").set_limit(1) is False
    rc.execute_command("LOCK.ACQUIRE", "lock-key", "o", 30000)
    with pytest.raises(WrongType):
        Stock(rc, "lock-key").get()


def test_cluster_hold_expires(rc: RedisCluster) -> None:
    s = Stock(rc, "{exp}")
    s.set(5)
    assert s.deduct(2, id="h", hold=0.05) == Deducted(3)
    req = s.request("h")
    assert req is not None and req.deadline_ms is not None
    node = rc.get_node_from_key("{exp}")
    assert node is not None and node.redis_connection is not None
    wait_server_past(node.redis_connection, req.deadline_ms)
    with pytest.raises(HoldExpired) as info:
        s.confirm("h")
    assert (info.value.request_id, info.value.deadline_ms) == ("h", req.deadline_ms)
    assert s.get() == 5


def test_cluster_events_stream_in_another_slot(rc: RedisCluster) -> None:
    """A stream in another slot than the stock: the package sends the call to the stock's
    master, which answers CROSSSLOT: redis-py's ClusterCrossSlotError (a ResponseError, not
    a FenceError), raised as it is. Nothing changes, no stream is created."""
    s = Stock(rc, "{a}")
    s.set(5)
    assert rc.keyslot("{a}") != rc.keyslot("{b}:ev")
    with pytest.raises(rx.ClusterCrossSlotError) as info:
        s.deduct(1, id="o", events="{b}:ev")
    assert "hash to the same slot" in str(info.value)
    assert not isinstance(info.value, FenceError)
    assert s.get() == 5 and s.request("o") is None
    assert rc.exists("{b}:ev") == 0


def test_cluster_pipelines_are_refused(cluster: Any, rc: RedisCluster) -> None:
    pipe = rc.pipeline()
    for make in (
        lambda: Stock(pipe, "{sku:1}"),
        lambda: Cart(pipe, {"{sku:1}:a": 1}),
        lambda: redis_fence.Lock(pipe, "{sku:1}:lock"),
    ):
        with pytest.raises(TypeError, match="pipeline"):
            make()

    async def main() -> None:
        ac = AsyncRedisCluster(
            startup_nodes=[AsyncClusterNode(h, p) for h, p in cluster.startup_nodes()],
            socket_timeout=30,
        )
        try:
            apipe: Any = ac.pipeline()  # not typed as a client: refused at run time too
            for make in (
                lambda: redis_fence.asyncio.Stock(apipe, "{sku:1}"),
                lambda: redis_fence.asyncio.Cart(apipe, {"{sku:1}:a": 1}),
                lambda: redis_fence.asyncio.Lock(apipe, "{sku:1}:lock"),
            ):
                with pytest.raises(TypeError, match="pipeline"):
                    make()
        finally:
            await ac.aclose()

    asyncio.run(main())
