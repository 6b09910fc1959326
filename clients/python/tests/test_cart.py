"""redis_fence.Cart (sync) against real servers: STOCK.CART, STOCK.CART.REFUND and
STOCK.CART.CONFIRM as the README says, every refusal with its item, and on Redis Cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from _servers import Server, raw_client
from redis import exceptions as rx
from redis.cluster import RedisCluster
from test_stock import (
    BUYER,
    PLAIN_ONLY,
    comparable,
    ex,
    server_ms,
    stock_calls,
    stream,
    to_str,
    wait_server_past,
)

from redis_fence import (
    AlreadyRefunded,
    BuyerRequired,
    Cart,
    CartPlaced,
    CartSoldOut,
    CommandError,
    Deducted,
    FenceError,
    HoldExpired,
    LedgerFull,
    LimitExceeded,
    NoSuchStock,
    PartialCart,
    RequestInfo,
    StaleToken,
    Stock,
    WrongType,
)

A, B, C = "{c}:a", "{c}:b", "{c}:c"
EV = "{c}:ev"


def setup(client: Any, a: int = 10, b: int = 20, c: int = 5) -> None:
    for key, quantity in ((A, a), (B, b), (C, c)):
        Stock(client, key).set(quantity)


def levels(client: Any, *keys: str) -> tuple[Any, ...]:
    return tuple(Stock(client, k).get() for k in (keys or (A, B, C)))


def requests(client: Any) -> tuple[int, ...]:
    out = []
    for key in (A, B, C):
        info = Stock(client, key).info()
        assert info is not None
        out.append(info.requests)
    return tuple(out)


@pytest.fixture
def small_ledger(r: redis.Redis) -> Iterator[None]:
    old = to_str(next(iter(r.config_get("fence.max-ledger-entries").values())))
    r.config_set("fence.max-ledger-entries", 1)
    yield
    r.config_set("fence.max-ledger-entries", old)


# ---- place -----------------------------------------------------------------------------------


def test_place_replay_request(r: redis.Redis) -> None:
    setup(r)
    cart = Cart(r, {A: 1, B: 2, C: 5})
    assert cart.keys == (A, B, C)
    placed = cart.place("o1")
    assert placed == CartPlaced((9, 18, 0)) and placed.ok is True
    assert levels(r) == (9, 18, 0)
    assert cart.place("o1") == CartPlaced((9, 18, 0))  # a replay: nothing deducted twice
    # Whatever quantities the replay carries.
    assert Cart(r, {A: 3, B: 3, C: 3}).place("o1") == CartPlaced((9, 18, 0))
    assert levels(r) == (9, 18, 0)
    assert cart.request("o1") == (
        RequestInfo("deducted", 1),
        RequestInfo("deducted", 2),
        RequestInfo("deducted", 5),
    )
    assert Stock(r, B).request("o1") == RequestInfo("deducted", 2)
    assert cart.request("nope") == (None, None, None)
    assert requests(r) == (1, 1, 1)
    # Each item is an ordinary ledger entry: one can be refunded on its own.
    assert Stock(r, A).refund("o1") == 1
    assert cart.request("o1")[0] == RequestInfo("refunded", 1)


def test_place_with_every_option(r: redis.Redis) -> None:
    setup(r, c=2)
    cart = Cart(r, [(A, 1), (C, 2)])
    before = server_ms(r)
    assert cart.place("o2", buyer=BUYER, hold=60, fence=7, events=EV) == CartPlaced((9, 0))
    after = server_ms(r)
    reqs = cart.request("o2")
    deadline = reqs[0].deadline_ms if reqs[0] is not None else None
    assert deadline is not None and before + 60000 - 1 <= deadline <= after + 60000 + 1
    assert reqs == (
        RequestInfo("held", 1, deadline, BUYER),
        RequestInfo("held", 2, deadline, BUYER),  # one deadline for the whole cart
    )
    for key in (A, C):
        info = Stock(r, key).info()
        assert info is not None and (info.fence, info.held, info.next_deadline_ms) == (
            7,
            1,
            deadline,
        )
    assert Stock(r, A).buyer(BUYER) == 1
    common = [("id", "o2"), ("buyer", BUYER), ("fence", "7"), ("cart", "2")]
    assert stream(r, EV) == [
        [("type", "deduct"), ("sku", A), ("quantity", "1"), ("remaining", "9"), *common]
        + [("item", "1")],
        [("type", "deduct"), ("sku", C), ("quantity", "2"), ("remaining", "0"), *common]
        + [("item", "2")],
        [("type", "soldout"), ("sku", C)],
    ]
    # A replay appends nothing.
    assert cart.place("o2", buyer=BUYER, hold=60, fence=7, events=EV) == CartPlaced((9, 0))
    assert r.xlen(EV) == 3


def test_sold_out_changes_nothing(r: redis.Redis) -> None:
    setup(r, b=1)
    cart = Cart(r, {A: 1, B: 2, C: 1})
    result = cart.place("o", buyer="u", hold=60, events=EV)
    assert result == CartSoldOut(index=2, key=B) and result.ok is False
    assert levels(r) == (10, 1, 5)
    assert requests(r) == (0, 0, 0)
    assert r.exists(EV) == 0
    assert Stock(r, A).buyer("u") == 0
    Stock(r, B).add(1)
    assert cart.place("o") == CartPlaced((9, 0, 4))  # the id was not spent


def test_no_such_stock(r: redis.Redis) -> None:
    setup(r)
    cart = Cart(r, {A: 1, B: 1, "{c}:missing": 1})
    with pytest.raises(NoSuchStock) as info:
        cart.place("o")
    e = info.value
    assert (e.index, e.key, e.code) == (3, "{c}:missing", "NOKEY")
    assert e.message == "NOKEY 3 {c}:missing"
    assert isinstance(e, CommandError) and isinstance(e, rx.ResponseError)
    assert isinstance(e, FenceError) and isinstance(e, redis.RedisError)
    assert levels(r, A, B) == (10, 20)
    assert r.exists("{c}:missing") == 0


def test_stale_token(r: redis.Redis) -> None:
    setup(r)
    assert Stock(r, B).deduct(1, fence=50) == Deducted(19)
    cart = Cart(r, {A: 1, B: 1})
    with pytest.raises(StaleToken) as info:
        cart.place("o", fence=10)
    e = info.value
    assert (e.index, e.key, e.token, e.highest, e.code) == (2, B, None, None, "STALE")
    assert isinstance(e, rx.ResponseError)
    assert levels(r, A, B) == (10, 19)
    assert requests(r) == (0, 0, 0)
    assert cart.place("o", fence=50) == CartPlaced((9, 18))


def test_limit_exceeded(r: redis.Redis) -> None:
    setup(r)
    Stock(r, B).set(20, limit=1)
    cart = Cart(r, {A: 1, B: 2})
    with pytest.raises(LimitExceeded) as info:
        cart.place("o", buyer=BUYER)
    e = info.value
    assert (e.index, e.key, e.buyer, e.holds, e.limit, e.code) == (2, B, None, None, None, "LIMIT")
    assert isinstance(e, rx.ResponseError)
    assert levels(r, A, B) == (10, 20)
    with pytest.raises(BuyerRequired) as required:
        cart.place("o")
    assert required.value.limit == 1
    assert requests(r) == (0, 0, 0)
    assert Cart(r, {A: 1, B: 1}).place("o", buyer=BUYER) == CartPlaced((9, 19))


def test_ledger_full(r: redis.Redis, small_ledger: None) -> None:
    setup(r)
    assert Stock(r, B).deduct(1, id="first") == Deducted(19)
    cart = Cart(r, {A: 1, B: 1})
    with pytest.raises(LedgerFull) as info:
        cart.place("o")
    e = info.value
    assert (e.index, e.key, e.code, e.message) == (2, B, "LEDGERFULL", f"LEDGERFULL 2 {B}")
    assert isinstance(e, rx.ResponseError)
    assert levels(r, A, B) == (10, 19)
    assert requests(r) == (0, 1, 0)


def test_partial_cart(r: redis.Redis) -> None:
    setup(r)
    assert Stock(r, B).deduct(1, id="o 7") == Deducted(19)
    cart = Cart(r, {A: 1, B: 1, C: 1})
    calls: list[Callable[[], object]] = [
        lambda: cart.place("o 7"),
        lambda: cart.refund("o 7"),
        lambda: cart.confirm("o 7"),
    ]
    for call in calls:
        with pytest.raises(PartialCart) as info:
            call()
        e = info.value
        assert (e.request_id, e.index, e.key, e.code) == ("o 7", 2, B, "ERR")
        assert e.message == (
            f"ERR request o 7 is in the ledger of some of the cart's stocks only "
            f"(item 2 {B} has it)"
        )
        assert isinstance(e, rx.ResponseError)
    assert levels(r) == (10, 19, 5)
    assert Stock(r, B).request("o 7") == RequestInfo("deducted", 1)


def test_wrong_type_and_plain_string(r: redis.Redis) -> None:
    setup(r)
    r.rpush("{c}:list", "x")
    with pytest.raises(WrongType):
        Cart(r, {A: 1, "{c}:list": 1}).place("o")
    with pytest.raises(WrongType):
        Cart(r, {A: 1, "{c}:list": 1}).refund("o")
    r.set("{c}:plain", "5")
    with pytest.raises(CommandError) as info:
        Cart(r, {A: 1, "{c}:plain": 1}).place("o")
    assert type(info.value) is CommandError and info.value.message == PLAIN_ONLY
    assert levels(r, A, "{c}:plain") == (10, 5)


def test_refusals_name_the_key_object_the_cart_was_given(r: redis.Redis) -> None:
    """CartSoldOut.key and the .key of a refusal are the cart's own key (bytes stay bytes), not
    the server's text of it (escaped, cut after 64 bytes)."""
    a, b = b"{c}:\xff a", b"{c}:\x00b\xfe"
    long_key = "{c}:" + "long-key-" * 10
    for key, quantity in ((a, 10), (b, 1), (long_key, 5)):
        Stock(r, key).set(quantity)
    cart = Cart(r, [(a, 1), (b, 2), (long_key, 1)])
    sold_out = cart.place(5001)
    assert sold_out == CartSoldOut(2, b) and sold_out.ok is False
    assert isinstance(sold_out, CartSoldOut) and sold_out.key is b
    Stock(r, b).set(5)
    Stock(r, long_key).set(0)
    cut = cart.place(5001)
    assert isinstance(cut, CartSoldOut) and (cut.index, cut.key) == (3, long_key)
    missing = b"{c}:\xfe missing"
    with pytest.raises(NoSuchStock) as nokey:
        Cart(r, [(a, 1), (missing, 1)]).place("o")
    assert (nokey.value.index, nokey.value.key) == (2, missing)
    assert Stock(r, b).deduct(1, fence=50) == Deducted(4)
    with pytest.raises(StaleToken) as stale:
        Cart(r, [(a, 1), (b, 1)]).place("o", fence=10)
    assert (stale.value.index, stale.value.key) == (2, b)
    Stock(r, b).set(5, limit=1)
    with pytest.raises(LimitExceeded) as limit:
        Cart(r, [(a, 1), (b, 2)]).place("o", buyer="u")
    assert (limit.value.index, limit.value.key) == (2, b)
    Stock(r, b).set(5, limit=0)
    assert Stock(r, b).deduct(1, id=9) == Deducted(4)
    two = Cart(r, [(a, 1), (b, 1)])
    for call in (lambda: two.place(9), lambda: two.refund(9), lambda: two.confirm(9)):
        with pytest.raises(PartialCart) as partial:
            call()
        assert (partial.value.index, partial.value.key) == (2, b)
    assert (Stock(r, a).get(), Stock(r, b).get()) == (10, 4)


# ---- refund, confirm -------------------------------------------------------------------------


def test_refund(r: redis.Redis) -> None:
    setup(r)
    cart = Cart(r, {A: 1, B: 2, C: 3})
    assert cart.place("o") == CartPlaced((9, 18, 2))
    assert cart.refund("o", events=EV) == (1, 2, 3)
    assert levels(r) == (10, 20, 5)
    assert cart.refund("o", events=EV) == (0, 0, 0)  # exactly once
    assert cart.request("o") == (
        RequestInfo("refunded", 1),
        RequestInfo("refunded", 2),
        RequestInfo("refunded", 3),
    )
    assert [dict(e)["type"] for e in stream(r, EV)] == ["refund"] * 3
    assert dict(stream(r, EV)[2]) == {
        "type": "refund",
        "sku": C,
        "id": "o",
        "quantity": "3",
        "remaining": "5",
        "cart": "3",
        "item": "3",
    }
    assert cart.place("o") == CartPlaced((10, 20, 5))  # a late replay takes nothing
    assert cart.refund("unknown") == (0, 0, 0)
    assert Cart(r, {"{c}:x": 1, "{c}:y": 1}).refund("o") == (0, 0)
    # One item refunded on its own first: the cart refund returns the rest.
    assert cart.place("p") == CartPlaced((9, 18, 2))
    assert Stock(r, B).refund("p") == 2
    assert cart.refund("p") == (1, 0, 3)
    assert levels(r) == (10, 20, 5)


def test_confirm(r: redis.Redis) -> None:
    setup(r)
    cart = Cart(r, {A: 1, B: 2})
    assert cart.place("o", hold=60) == CartPlaced((9, 18))
    assert cart.confirm("o") is True
    assert cart.confirm("o") is True
    assert cart.request("o") == (RequestInfo("confirmed", 1), RequestInfo("confirmed", 2))
    assert cart.confirm("unknown") is False
    assert cart.place("d") == CartPlaced((8, 16))
    assert cart.confirm("d") is True  # never held
    assert cart.refund("o") == (1, 2)  # confirmed, then cancelled


def test_confirm_after_the_holds_expired(r: redis.Redis) -> None:
    setup(r)
    cart = Cart(r, {A: 1, B: 2})
    assert cart.place("late", hold=0.05, buyer="u") == CartPlaced((9, 18))
    req = cart.request("late")[1]
    assert req is not None and req.deadline_ms is not None
    wait_server_past(r, req.deadline_ms)
    with pytest.raises(HoldExpired) as info:
        cart.confirm("late")
    e = info.value
    assert (e.request_id, e.deadline_ms, e.code) == ("late", req.deadline_ms, "EXPIRED")
    assert isinstance(e, rx.ResponseError)
    assert levels(r, A, B) == (10, 20)
    assert cart.request("late") == (
        RequestInfo("expired", 1, None, "u"),
        RequestInfo("expired", 2, None, "u"),
    )
    assert cart.refund("late") == (0, 0)


def test_confirm_after_one_item_was_refunded(r: redis.Redis) -> None:
    setup(r)
    cart = Cart(r, {A: 1, B: 2})
    assert cart.place("o", hold=60) == CartPlaced((9, 18))
    assert Stock(r, A).refund("o") == 1
    with pytest.raises(AlreadyRefunded) as info:
        cart.confirm("o")
    assert (info.value.request_id, info.value.code) == ("o", "REFUNDED")
    b = cart.request("o")[1]
    assert b is not None and b.state == "held"  # no item was confirmed


# ---- inputs ----------------------------------------------------------------------------------


def test_mapping_and_sequence_of_pairs(r: redis.Redis) -> None:
    shapes: list[Any] = [
        {A: 1, B: 2},
        [(A, 1), (B, 2)],
        ((A, 1), (B, 2)),
        [(A.encode(), 1), (B.encode(), 2)],
    ]
    for i, items in enumerate(shapes):
        setup(r)
        cart = Cart(r, items)
        assert [to_str(k) for k in cart.keys] == [A, B]
        assert cart.place(f"o{i}") == CartPlaced((9, 18)), items
        assert cart.refund(f"o{i}") == (1, 2)
    # The order given is the order of the reply.
    setup(r)
    assert Cart(r, [(B, 2), (A, 1)]).place("x") == CartPlaced((18, 9))


def test_256_items(r: redis.Redis) -> None:
    keys = [f"{{c}}:{i}" for i in range(256)]
    with r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.execute_command("STOCK.SET", key, 2)
        pipe.execute()
    cart = Cart(r, dict.fromkeys(keys, 1))
    assert cart.place("big", hold=60) == CartPlaced((1,) * 256)
    assert cart.confirm("big") is True
    assert cart.refund("big") == (1,) * 256
    assert Stock(r, keys[255]).get() == 2
    with pytest.raises(ValueError):
        Cart(r, {**dict.fromkeys(keys, 1), "{c}:256": 1})


def test_confirm_of_a_refunded_cart(r: redis.Redis) -> None:
    setup(r)
    cart = Cart(r, {A: 1, B: 2})
    assert cart.place("o") == CartPlaced((9, 18))
    assert cart.refund("o") == (1, 2)
    with pytest.raises(AlreadyRefunded):
        cart.confirm("o")


def test_bad_arguments_send_nothing(r: redis.Redis, server: Server) -> None:
    setup(r)
    cart = Cart(r, {A: 1, B: 2})
    bad: list[tuple[Callable[[], object], type]] = [
        (lambda: Cart(r, {}), ValueError),
        (lambda: Cart(r, []), ValueError),
        (lambda: Cart(r, [(f"{{c}}:{i}", 1) for i in range(257)]), ValueError),
        (lambda: Cart(r, [(A, 1), (A, 2)]), ValueError),
        (lambda: Cart(r, [(A, 1), (A.encode(), 2)]), ValueError),
        (lambda: Cart(r, {A: 0}), ValueError),
        (lambda: Cart(r, {A: -1}), ValueError),
        (lambda: Cart(r, {A: True}), TypeError),
        (lambda: cart.place(""), ValueError),
        (lambda: cart.place("o", hold=0), ValueError),
        (lambda: cart.place("o", fence=0), ValueError),
        (lambda: cart.place("o", fence=-2), ValueError),
        (lambda: cart.place("o", buyer=""), ValueError),
        (lambda: cart.refund(""), ValueError),
        (lambda: cart.confirm(""), ValueError),
    ]
    before = stock_calls(server)
    for call, error in bad:
        with pytest.raises(error):
            call()
    assert stock_calls(server) == before, "a refused call reached the server"
    assert cart.place("o") == CartPlaced((9, 18))
    assert stock_calls(server) == before + 1


def test_server_side_duplicate_key_is_refused_too(r: redis.Redis) -> None:
    """What the client's ValueError stands in for: the server refuses a repeated key."""
    setup(r)
    with pytest.raises(rx.ResponseError) as info:
        r.execute_command("STOCK.CART", 2, A, 1, A, 1, "ID", "o")
    assert str(info.value) == f"key {A} appears twice in the cart"


# ---- RESP2 / RESP3, bytes / str --------------------------------------------------------------


def scenario(client: Any) -> list[Any]:
    out: list[Any] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            value = call()
        except FenceError as e:
            out.append(ex(e))
            return
        out.append(comparable(value))

    setup(client)
    Stock(client, B).deduct(1, fence=50)
    Stock(client, C).set(5, limit=2)
    cart = Cart(client, {A: 1, B: 2, C: 2})
    run(lambda: cart.place("o", buyer=BUYER, hold=60, fence=50))
    run(lambda: cart.place("o", buyer=BUYER, hold=60, fence=50))
    run(lambda: cart.request("o"))
    run(lambda: cart.confirm("o"))
    run(lambda: cart.request("o"))
    run(lambda: cart.place("p", buyer=BUYER))
    run(lambda: cart.place("p", buyer="v", fence=1))
    run(lambda: Cart(client, {A: 1, B: 100}).place("p", buyer="v"))
    run(lambda: Cart(client, {A: 1, "{c}:none": 1}).place("p"))
    run(lambda: cart.place("p"))
    run(lambda: cart.refund("o"))
    run(lambda: cart.refund("o"))
    run(lambda: cart.confirm("o"))
    run(lambda: cart.confirm("zz"))
    Stock(client, A).deduct(1, id="q")
    run(lambda: cart.place("q", buyer="v"))
    return out


def test_results_identical_across_protocols(r: redis.Redis, server: Server) -> None:
    results = {}
    for protocol in (2, 3):
        for decode in (False, True):
            r.flushall()
            client = server.client(protocol=protocol, decode_responses=decode)
            try:
                assert to_str(client.client_info()["resp"]) == str(protocol)
                results[(protocol, decode)] = scenario(client)
            finally:
                client.close()
    first = results[(2, False)]
    for variant, got in results.items():
        assert got == first, variant
    assert first[0] == CartPlaced((9, 17, 3))
    assert [x[0] if isinstance(x, tuple) and isinstance(x[0], str) else None for x in first] == [
        None,
        None,
        None,
        None,
        None,
        "LimitExceeded",
        "StaleToken",
        None,  # CartSoldOut
        "NoSuchStock",
        "BuyerRequired",
        None,
        None,
        "AlreadyRefunded",
        None,
        "PartialCart",
    ]
    assert first[7] == CartSoldOut(2, B)


# ---- Redis Cluster ---------------------------------------------------------------------------


def test_cluster_cart_in_one_slot(cluster: Any, rc: RedisCluster) -> None:
    tags: dict[int, str] = {}
    for i in range(500):
        tag = f"{{sale:{i}}}"
        tags.setdefault(cluster.node_for_slot(rc.keyslot(tag)).port, tag)
        if len(tags) == len(cluster.nodes):
            break
    assert len(tags) == len(cluster.nodes)
    for port, tag in tags.items():
        phone, case, gone = f"{tag}:phone", f"{tag}:case", f"{tag}:gone"
        Stock(rc, phone).set(10)
        Stock(rc, case).set(1, limit=1)
        cart = Cart(rc, {phone: 1, case: 1})
        assert cart.place("o", buyer="u", hold=60, events=f"{tag}:ev") == CartPlaced((9, 0))
        assert cart.place("o", buyer="u", hold=60) == CartPlaced((9, 0))
        with raw_client("127.0.0.1", port) as node:  # on the slot's master
            assert node.execute_command("STOCK.GET", phone) == 9
        reqs = cart.request("o")
        assert reqs[0] is not None and reqs[0].deadline_ms is not None
        assert reqs == (
            RequestInfo("held", 1, reqs[0].deadline_ms, "u"),
            RequestInfo("held", 1, reqs[0].deadline_ms, "u"),
        )
        assert cart.confirm("o") is True
        assert cart.confirm("x") is False
        assert cart.place("p", buyer="v") == CartSoldOut(2, case)
        with pytest.raises(LimitExceeded) as limit:
            cart.place("p", buyer="u")
        assert (limit.value.index, limit.value.key) == (2, case)
        with pytest.raises(NoSuchStock) as nokey:
            Cart(rc, {phone: 1, gone: 1}).place("p")
        assert (nokey.value.index, nokey.value.key) == (2, gone)
        assert cart.refund("o") == (1, 1)
        assert cart.refund("o") == (0, 0)
        assert [dict(e)["type"] for e in stream(rc, f"{tag}:ev")] == ["deduct", "deduct", "soldout"]


def test_cluster_cart_across_slots(rc: RedisCluster) -> None:
    """Keys in two slots: the cart goes to the first key's master, which answers CROSSSLOT:
    redis-py's ClusterCrossSlotError (a ResponseError, not a FenceError), raised as it is;
    nothing changes in either key."""
    a, b = "{x}:a", "{y}:b"
    assert rc.keyslot(a) != rc.keyslot(b)
    Stock(rc, a).set(5)
    Stock(rc, b).set(5)
    cart = Cart(rc, {a: 1, b: 1})
    for call in (lambda: cart.place("o"), lambda: cart.refund("o"), lambda: cart.confirm("o")):
        with pytest.raises(rx.ClusterCrossSlotError) as info:
            call()
        assert "hash to the same slot" in str(info.value)
        assert not isinstance(info.value, FenceError)
    assert (Stock(rc, a).get(), Stock(rc, b).get()) == (5, 5)
    assert Stock(rc, a).request("o") is None and Stock(rc, b).request("o") is None
