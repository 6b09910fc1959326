"""redis_fence.asyncio.Stock and Cart against real servers: the twins of test_stock.py and
test_cart.py.

Each test is a plain function that runs one coroutine with asyncio.run; its redis.asyncio
clients are made inside the coroutine from the fixtures' host and port. The scenarios of the
sync tests are run again here, awaited, and must give the very same results under RESP2 and
RESP3, with bytes and str replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from _servers import Server, raw_client
from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from test_cart import EV, A, B, C
from test_cart import scenario as sync_cart_scenario
from test_stock import (
    BUYER,
    PLAIN_ONLY,
    comparable,
    ex,
    shown,
    stock_calls,
    to_str,
)
from test_stock import scenario as sync_stock_scenario

from redis_fence import (
    AlreadyRefunded,
    BuyerRequired,
    CartPlaced,
    CartSoldOut,
    CommandError,
    Deducted,
    Events,
    FenceError,
    HoldExpired,
    LedgerFull,
    LimitExceeded,
    NoSuchStock,
    PartialCart,
    RequestInfo,
    SoldOut,
    StaleToken,
    StockInfo,
    WrongType,
)
from redis_fence.asyncio import Cart, Stock

VARIANTS = [(2, False), (2, True), (3, False), (3, True)]


# ---- helpers ---------------------------------------------------------------------------------


def client_of(server: Server, **kwargs: Any) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(host=server.host, port=server.port, socket_timeout=30, **kwargs)


async def server_ms(client: Any) -> int:
    sec, usec = await client.execute_command("TIME")
    return int(sec) * 1000 + int(usec) // 1000


async def wait_server_past(client: Any, deadline_ms: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        now = await server_ms(client)
        if now > deadline_ms:
            return
        assert loop.time() < give_up, f"server clock stuck at {now} <= {deadline_ms}"
        await asyncio.sleep(min(0.05, (deadline_ms - now + 1) / 1000))


async def astream(client: Any, key: str) -> list[list[tuple[str, str]]]:
    return [
        [(to_str(k), to_str(v)) for k, v in fields.items()]
        for _id, fields in await client.xrange(key)
    ]


async def levels(client: Any, *keys: str) -> tuple[Any, ...]:
    return tuple([await Stock(client, k).get() for k in keys])


# ---- the sync scenarios, awaited ---------------------------------------------------------


async def stock_scenario(client: Any) -> list[Any]:
    """test_stock.scenario, step for step."""
    out: list[Any] = []

    async def run(call: Callable[[], Awaitable[Any]]) -> None:
        try:
            value = await call()
        except FenceError as e:
            out.append(ex(e))
            return
        out.append(comparable(value))

    s = Stock(client, "{p}")
    await run(lambda: s.set(10, limit=2))
    await run(lambda: s.info())
    await run(lambda: s.deduct(1, id="a", buyer=BUYER))
    await run(lambda: s.deduct(2, id="b", buyer=BUYER))
    await run(lambda: s.deduct(1))
    await run(lambda: s.deduct(1, id="a", buyer="x"))
    await run(lambda: s.request("a"))
    await run(lambda: s.request("zz"))
    await run(lambda: s.deduct(1, id="h", buyer="u2", hold=60, fence=5, events="{p}:ev"))
    await run(lambda: s.request("h"))
    await run(lambda: s.info())
    await run(lambda: s.confirm("h"))
    await run(lambda: s.confirm("nope"))
    await run(lambda: s.refund("a"))
    await run(lambda: s.refund("a"))
    await run(lambda: s.confirm("a"))
    await run(lambda: s.buyer(BUYER))
    await run(lambda: s.buyer("u2"))
    await run(lambda: s.buyer("none"))
    await run(lambda: s.get())
    await run(lambda: s.set_limit(0))
    await run(lambda: s.add(5, id="r"))
    await run(lambda: s.add(5, id="r"))
    await run(lambda: s.deduct(100))
    await run(lambda: s.deduct(1, fence=4))
    await run(lambda: s.deduct(1, id="x", hold=0.05))
    await run(lambda: s.info())
    req = await s.request("x")
    assert req is not None and req.deadline_ms is not None
    await wait_server_past(client, req.deadline_ms)
    try:
        await s.confirm("x")
        out.append("confirmed")
    except HoldExpired as e:
        assert e.deadline_ms == req.deadline_ms
        assert e.message == f"EXPIRED request x expired at {req.deadline_ms}"
        out.append(("HoldExpired", e.code, e.request_id))
    await run(lambda: s.request("x"))
    m = Stock(client, "{p}:missing")
    await run(lambda: m.get())
    await run(lambda: m.info())
    await run(lambda: m.request("a"))
    await run(lambda: m.buyer("a"))
    await run(lambda: m.set_limit(1))
    await run(lambda: m.deduct(1))
    await run(lambda: m.refund("a"))
    await run(lambda: m.confirm("a"))
    await client.set("{p}:plain", "5")
    pl = Stock(client, "{p}:plain")
    await run(lambda: pl.info())
    await run(lambda: pl.deduct(2))
    await run(lambda: pl.get())
    await run(lambda: pl.request("a"))
    await client.rpush("{p}:list", "x")
    await run(lambda: Stock(client, "{p}:list").get())
    return out


async def cart_scenario(client: Any) -> list[Any]:
    """test_cart.scenario, step for step."""
    out: list[Any] = []

    async def run(call: Callable[[], Awaitable[Any]]) -> None:
        try:
            value = await call()
        except FenceError as e:
            out.append(ex(e))
            return
        out.append(comparable(value))

    for key, quantity in ((A, 10), (B, 20), (C, 5)):
        await Stock(client, key).set(quantity)
    await Stock(client, B).deduct(1, fence=50)
    await Stock(client, C).set(5, limit=2)
    cart = Cart(client, {A: 1, B: 2, C: 2})
    await run(lambda: cart.place("o", buyer=BUYER, hold=60, fence=50))
    await run(lambda: cart.place("o", buyer=BUYER, hold=60, fence=50))
    await run(lambda: cart.request("o"))
    await run(lambda: cart.confirm("o"))
    await run(lambda: cart.request("o"))
    await run(lambda: cart.place("p", buyer=BUYER))
    await run(lambda: cart.place("p", buyer="v", fence=1))
    await run(lambda: Cart(client, {A: 1, B: 100}).place("p", buyer="v"))
    await run(lambda: Cart(client, {A: 1, "{c}:none": 1}).place("p"))
    await run(lambda: cart.place("p"))
    await run(lambda: cart.refund("o"))
    await run(lambda: cart.refund("o"))
    await run(lambda: cart.confirm("o"))
    await run(lambda: cart.confirm("zz"))
    await Stock(client, A).deduct(1, id="q")
    await run(lambda: cart.place("q", buyer="v"))
    return out


@pytest.mark.parametrize("which", ["stock", "cart"])
def test_same_results_as_sync(r: redis.Redis, server: Server, which: str) -> None:
    sync = sync_stock_scenario if which == "stock" else sync_cart_scenario
    ascenario = stock_scenario if which == "stock" else cart_scenario
    expected = sync(r)
    assert len(expected) > 10

    async def main() -> dict[tuple[int, bool], list[Any]]:
        results = {}
        for protocol, decode in VARIANTS:
            await asyncio.to_thread(r.flushall)
            client = client_of(server, protocol=protocol, decode_responses=decode)
            try:
                info = await client.client_info()
                assert to_str(info["resp"]) == str(protocol)
                results[(protocol, decode)] = await ascenario(client)
            finally:
                await client.aclose()
        return results

    for variant, got in asyncio.run(main()).items():
        assert got == expected, variant


# ---- Stock -----------------------------------------------------------------------------------


def test_stock_methods(server: Server, r: redis.Redis) -> None:
    async def main() -> None:
        c = client_of(server)
        try:
            s = Stock(c, "{sku}")
            assert await s.get() is None and await s.info() is None
            await s.set(10, limit=2)
            assert await s.add(2, id="r1") == 12
            assert await s.add(2, id="r1") == 12
            assert await s.deduct(2, id="a", buyer=BUYER, events="{sku}:ev") == Deducted(10)
            assert await s.deduct(5, id="a", buyer=BUYER) == Deducted(10)  # a replay
            assert await s.request("a") == RequestInfo("deducted", 2, None, BUYER)
            with pytest.raises(LimitExceeded) as limit:
                await s.deduct(1, id="b", buyer=BUYER)
            assert (limit.value.buyer, limit.value.holds, limit.value.limit) == (
                shown(BUYER),
                2,
                2,
            )
            assert isinstance(limit.value, rx.ResponseError)
            with pytest.raises(BuyerRequired) as required:
                await s.deduct(1, id="b")
            assert required.value.limit == 2
            before = await server_ms(c)
            assert await s.deduct(1, id="h", buyer="u", hold=2.5, fence=100) == Deducted(9)
            after = await server_ms(c)
            held = await s.request("h")
            assert held is not None and held.state == "held" and held.deadline_ms is not None
            assert before + 2499 <= held.deadline_ms <= after + 2501
            with pytest.raises(StaleToken) as stale:
                await s.deduct(1, id="c", buyer="v", fence=99)
            assert (stale.value.token, stale.value.highest) == (99, 100)
            assert await s.confirm("h") is True
            assert await s.confirm("h") is True
            assert await s.confirm("unknown") is False
            assert await s.refund("a") == 2
            assert await s.refund("a") == 0
            with pytest.raises(AlreadyRefunded) as refunded:
                await s.confirm("a")
            assert refunded.value.request_id == "a"
            assert await s.buyer(BUYER) == 0 and await s.buyer("u") == 1
            assert await s.set_limit(0) is True
            assert await Stock(c, "missing").set_limit(1) is False
            assert await Stock(c, "missing").buyer("u") is None
            assert await Stock(c, "missing").deduct(1) == SoldOut()
            assert await s.deduct(100) == SoldOut()
            assert await s.info() == StockInfo(
                available=11,
                deducted=1,
                requests=2,
                fence=100,
                restocks=1,
                held=0,
                held_units=0,
                next_deadline_ms=0,
                limit=0,
                buyers=2,
            )
            assert [dict(e)["type"] for e in await astream(c, "{sku}:ev")] == ["deduct"]
            assert await s.refund("h", events=Events("{sku}:ev", maxlen=1)) == 1
            entries = await astream(c, "{sku}:ev")
            assert len(entries) == 1 and dict(entries[0])["type"] == "refund"
        finally:
            await c.aclose()

    asyncio.run(main())


def test_hold_expired(server: Server, r: redis.Redis) -> None:
    async def main() -> None:
        c = client_of(server)
        try:
            s = Stock(c, "sku")
            await s.set(10)
            assert await s.deduct(3, id="late", hold=0.05) == Deducted(7)
            req = await s.request("late")
            assert req is not None and req.deadline_ms is not None
            await wait_server_past(c, req.deadline_ms)
            with pytest.raises(HoldExpired) as info:
                await s.confirm("late")
            assert (info.value.request_id, info.value.deadline_ms) == ("late", req.deadline_ms)
            assert await s.get() == 10
            assert await s.request("late") == RequestInfo("expired", 3)
            assert await s.refund("late") == 0
        finally:
            await c.aclose()

    asyncio.run(main())


def test_plain_string_and_wrong_types(server: Server, r: redis.Redis) -> None:
    async def main() -> None:
        c = client_of(server, decode_responses=True)
        try:
            await c.set("p", "10")
            p = Stock(c, "p")
            assert await p.info() == StockInfo(available=10, plain=True)
            assert await p.deduct(4) == Deducted(6)
            assert await c.get("p") == "6"
            with pytest.raises(CommandError) as plain:
                await p.deduct(1, id="o")
            assert type(plain.value) is CommandError and plain.value.message == PLAIN_ONLY
            with pytest.raises(WrongType):
                await p.set(1)
            await c.execute_command("LOCK.ACQUIRE", "lock", "owner", 30000)
            await c.rpush("list", "x")
            for key in ("lock", "list"):
                s = Stock(c, key)
                for call in (s.get, s.info, lambda s=s: s.deduct(1), lambda s=s: s.add(1)):
                    with pytest.raises(WrongType) as info:
                        await call()
                    assert isinstance(info.value, rx.ResponseError)
                    assert info.value.code == "WRONGTYPE"
        finally:
            await c.aclose()

    asyncio.run(main())


def test_ledger_full(server: Server, r: redis.Redis) -> None:
    old = to_str(next(iter(r.config_get("fence.max-ledger-entries").values())))
    r.config_set("fence.max-ledger-entries", 1)

    async def main() -> None:
        c = client_of(server)
        try:
            s = Stock(c, A)
            await s.set(5)
            await Stock(c, B).set(5)
            assert await s.deduct(1, id="a") == Deducted(4)
            with pytest.raises(LedgerFull) as one:
                await s.deduct(1, id="b")
            assert (one.value.code, one.value.index) == ("ERR", None)
            with pytest.raises(LedgerFull) as item:
                await Cart(c, {B: 1, A: 1}).place("c")
            assert (item.value.code, item.value.index, item.value.key) == ("LEDGERFULL", 2, A)
            assert await levels(c, A, B) == (4, 5)
        finally:
            await c.aclose()

    try:
        asyncio.run(main())
    finally:
        r.config_set("fence.max-ledger-entries", old)


def test_bad_arguments_send_nothing(server: Server, r: redis.Redis) -> None:
    async def main() -> None:
        c = client_of(server)
        try:
            s = Stock(c, A)
            await s.set(5)
            cart = Cart(c, {A: 1, B: 1})
            bad: list[tuple[Callable[[], Awaitable[object]], type]] = [
                (lambda: s.deduct(0), ValueError),
                (lambda: s.deduct(True), TypeError),
                (lambda: s.deduct(1, fence=-1), ValueError),
                (lambda: s.deduct(1, id="o", hold=0), ValueError),
                (lambda: s.deduct(1, id=""), ValueError),
                (lambda: s.deduct(1, buyer="u"), ValueError),
                (lambda: s.deduct(1, hold=1), ValueError),
                (lambda: s.set(-1), ValueError),
                (lambda: s.set_limit(-1), ValueError),
                (lambda: s.add(0), ValueError),
                (lambda: s.refund(""), ValueError),
                (lambda: s.confirm(""), ValueError),
                (lambda: s.request(""), ValueError),
                (lambda: s.buyer(""), ValueError),
                (lambda: cart.place(""), ValueError),
                (lambda: cart.place("o", hold=0), ValueError),
                (lambda: cart.refund(""), ValueError),
                (lambda: cart.confirm(""), ValueError),
            ]
            before = await asyncio.to_thread(stock_calls, server)
            for call, error in bad:
                with pytest.raises(error):
                    await call()
            refused: list[Any] = [
                {},
                [(A, 1), (A.encode(), 1)],
                [(f"k{i}", 1) for i in range(257)],
            ]
            for items in refused:
                with pytest.raises(ValueError):
                    Cart(c, items)
            assert await asyncio.to_thread(stock_calls, server) == before
            assert await s.get() == 5
            assert await asyncio.to_thread(stock_calls, server) == before + 1
        finally:
            await c.aclose()

    asyncio.run(main())


def test_int_ids_and_buyers_are_their_digits(server: Server, r: redis.Redis) -> None:
    async def main() -> None:
        c = client_of(server)
        try:
            s = Stock(c, A)
            await s.set(10, limit=3)
            assert await s.deduct(1, id=1001, buyer=7) == Deducted(9)
            entry = RequestInfo("deducted", 1, None, "7")
            assert await s.request(1001) == entry and await s.request("1001") == entry
            assert await s.deduct(1, id="1001", buyer="7") == Deducted(9)  # a replay
            assert await s.buyer(7) == 1
            assert await s.refund(1001) == 1
            assert await s.add(5, id=77) == 15 and await s.add(5, id="77") == 15
            cart = Cart(c, {A: 1, B: 1})
            await Stock(c, B).set(5)
            assert await cart.place(5001, buyer=8) == CartPlaced((14, 4))
            assert await cart.confirm(5001) is True
            assert await cart.refund("5001") == (1, 1)
            before = stock_calls(server)
            for call in (
                lambda: s.deduct(1, id=True),
                lambda: s.deduct(1, id="o", buyer=False),
                lambda: s.request(True),
                lambda: cart.place(True),
            ):
                with pytest.raises(TypeError):
                    await call()
            assert stock_calls(server) == before
        finally:
            await c.aclose()

    asyncio.run(main())


# ---- Cart ------------------------------------------------------------------------------------


def test_cart(server: Server, r: redis.Redis) -> None:
    async def main() -> None:
        c = client_of(server, protocol=2)
        try:
            for key, quantity in ((A, 10), (B, 1), (C, 5)):
                await Stock(c, key).set(quantity)
            cart = Cart(c, [(A, 1), (B, 2)])
            assert await cart.place("o", events=EV) == CartSoldOut(2, B)
            assert await levels(c, A, B) == (10, 1) and await c.exists(EV) == 0
            await Stock(c, B).add(1)
            assert await cart.place("o", hold=60, buyer="u", events=EV) == CartPlaced((9, 0))
            assert await cart.place("o") == CartPlaced((9, 0))
            reqs = await cart.request("o")
            assert [(q.state, q.quantity, q.buyer) for q in reqs if q is not None] == [
                ("held", 1, "u"),
                ("held", 2, "u"),
            ]
            assert await cart.confirm("o") is True
            assert await cart.confirm("x") is False
            entries = await astream(c, EV)
            assert [dict(e)["type"] for e in entries] == ["deduct", "deduct", "soldout"]
            assert dict(entries[1])["item"] == "2" and dict(entries[1])["cart"] == "2"
            with pytest.raises(NoSuchStock) as nokey:
                await Cart(c, {A: 1, "{c}:gone": 1}).place("p")
            assert (nokey.value.index, nokey.value.key) == (2, "{c}:gone")
            await Stock(c, C).deduct(1, fence=9)
            with pytest.raises(StaleToken) as stale:
                await Cart(c, {A: 1, C: 1}).place("p", fence=8)
            assert (stale.value.index, stale.value.key) == (2, C)
            await Stock(c, C).set_limit(1)
            with pytest.raises(LimitExceeded) as limit:
                await Cart(c, {A: 1, C: 2}).place("p", buyer="u")
            assert (limit.value.index, limit.value.key) == (2, C)
            await Stock(c, C).deduct(1, id="p", buyer="u")
            with pytest.raises(PartialCart) as partial:
                await Cart(c, {A: 1, C: 1}).place("p", buyer="u")
            assert (partial.value.request_id, partial.value.index, partial.value.key) == (
                "p",
                2,
                C,
            )
            assert await cart.refund("o") == (1, 2)
            assert await cart.refund("o") == (0, 0)
            assert await levels(c, A, B, C) == (10, 2, 3)
            with pytest.raises(AlreadyRefunded):
                await cart.confirm("o")
            assert await cart.place("late", hold=0.05) == CartPlaced((9, 0))
            first = (await cart.request("late"))[0]
            assert first is not None and first.deadline_ms is not None
            await wait_server_past(c, first.deadline_ms)
            with pytest.raises(HoldExpired) as expired:
                await cart.confirm("late")
            assert (expired.value.request_id, expired.value.deadline_ms) == (
                "late",
                first.deadline_ms,
            )
            assert await levels(c, A, B) == (10, 2)
        finally:
            await c.aclose()

    asyncio.run(main())


def test_cart_refusals_name_the_key_object_the_cart_was_given(
    server: Server, r: redis.Redis
) -> None:
    a, b = b"{c}:\xff a", b"{c}:\x00b\xfe"
    long_key = "{c}:" + "long-key-" * 10

    async def main() -> None:
        c = client_of(server)
        try:
            for key, quantity in ((a, 10), (b, 1), (long_key, 0)):
                await Stock(c, key).set(quantity)
            cart = Cart(c, [(a, 1), (b, 2), (long_key, 1)])
            sold_out = await cart.place(5001)
            assert isinstance(sold_out, CartSoldOut) and (sold_out.index, sold_out.key) == (2, b)
            assert sold_out.key is b
            await Stock(c, b).set(5)
            cut = await cart.place(5001)
            assert isinstance(cut, CartSoldOut) and (cut.index, cut.key) == (3, long_key)
            missing = b"{c}:\xfe missing"
            with pytest.raises(NoSuchStock) as nokey:
                await Cart(c, [(a, 1), (missing, 1)]).place("o")
            assert (nokey.value.index, nokey.value.key) == (2, missing)
            assert await Stock(c, b).deduct(1, id=9) == Deducted(4)
            two = Cart(c, [(a, 1), (b, 1)])
            for call in (lambda: two.place(9), lambda: two.refund(9), lambda: two.confirm(9)):
                with pytest.raises(PartialCart) as partial:
                    await call()
                assert (partial.value.index, partial.value.key) == (2, b)
        finally:
            await c.aclose()

    asyncio.run(main())


# ---- Redis Cluster ---------------------------------------------------------------------------


def test_cluster(cluster: Any, rc: Any) -> None:
    keys: dict[int, str] = {}
    for i in range(500):
        key = f"{{sku:{i}}}"
        keys.setdefault(cluster.node_for_slot(rc.keyslot(key)).port, key)
        if len(keys) == len(cluster.nodes):
            break
    assert len(keys) == len(cluster.nodes)

    async def main() -> None:
        c = AsyncRedisCluster(
            startup_nodes=[AsyncClusterNode(h, p) for h, p in cluster.startup_nodes()],
            socket_timeout=30,
        )
        try:
            for port, key in keys.items():
                s = Stock(c, key)
                await s.set(10, limit=2)
                with raw_client("127.0.0.1", port) as node:  # on the slot's master
                    assert node.execute_command("STOCK.GET", key) == 10
                assert await s.deduct(2, id="a", buyer="u", events=f"{key}:ev") == Deducted(8)
                assert await s.deduct(2, id="a", buyer="u") == Deducted(8)
                with pytest.raises(LimitExceeded):
                    await s.deduct(1, id="b", buyer="u")
                assert await s.request("a") == RequestInfo("deducted", 2, None, "u")
                assert await s.confirm("a") is True
                assert await s.refund("a") == 2
                info = await s.info()
                assert info is not None and (info.available, info.requests) == (10, 1)
                # A cart whose keys share the stock's hash tag.
                other = f"{key}:case"
                await Stock(c, other).set(1)
                cart = Cart(c, {key: 1, other: 1})
                assert await cart.place("o", buyer="v") == CartPlaced((9, 0))
                assert await cart.place("p", buyer="w") == CartSoldOut(2, other)
                assert await cart.refund("o") == (1, 1)
            # Keys in two slots.
            a, b = "{x}:a", "{y}:b"
            await Stock(c, a).set(5)
            await Stock(c, b).set(5)
            with pytest.raises(rx.ClusterCrossSlotError) as cross:
                await Cart(c, {a: 1, b: 1}).place("o")
            assert not isinstance(cross.value, FenceError)
            with pytest.raises(rx.ClusterCrossSlotError):
                await Stock(c, a).deduct(1, id="o", events="{y}:ev")
            assert (await Stock(c, a).get(), await Stock(c, b).get()) == (5, 5)
            assert await Stock(c, a).request("o") is None
        finally:
            await c.aclose()

    asyncio.run(main())
