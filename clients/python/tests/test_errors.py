"""Pure unit tests, no server: errors.map_error on the error replies of the README's error table
(as redis-py hands them over: parsed by its own reply parser, which takes ``ERR`` off), the
exception family, and the argument builders and reply parsers of ``_protocol``."""

from __future__ import annotations

import math
from typing import Any

import pytest
import redis
from redis import exceptions as rx
from redis._parsers.base import BaseParser

import redis_fence
from redis_fence import _protocol as p
from redis_fence.errors import (
    AlreadyRefunded,
    BuyerRequired,
    CommandError,
    FenceError,
    HoldExpired,
    LedgerFull,
    LimitExceeded,
    LockLost,
    LockNotAcquired,
    NoSuchStock,
    PartialCart,
    StaleToken,
    Unblocked,
    WrongType,
    map_error,
)
from redis_fence.results import (
    CartPlaced,
    CartSoldOut,
    Deducted,
    Events,
    RequestInfo,
    SoldOut,
    StockInfo,
)

MAX = (1 << 63) - 1


def reply(text: str) -> Exception:
    """The exception redis-py makes of the error reply ``text`` (its own parser)."""
    error: Exception = BaseParser.parse_error(text)
    return error


def mapped(text: str) -> Exception:
    error = reply(text)
    assert isinstance(error, rx.ResponseError)
    return map_error(error)


# ---- the exception family ------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [
        CommandError,
        WrongType,
        StaleToken,
        LimitExceeded,
        BuyerRequired,
        HoldExpired,
        AlreadyRefunded,
        LedgerFull,
        NoSuchStock,
        PartialCart,
        Unblocked,
    ],
)
def test_command_errors_are_response_errors(cls: type) -> None:
    assert issubclass(cls, FenceError)
    assert issubclass(cls, CommandError)
    assert issubclass(cls, rx.ResponseError)
    assert issubclass(cls, rx.RedisError)
    assert issubclass(cls, redis.RedisError)


def test_family_roots() -> None:
    assert issubclass(FenceError, rx.RedisError)
    assert not issubclass(FenceError, rx.ResponseError)
    assert issubclass(LockNotAcquired, FenceError) and issubclass(LockNotAcquired, rx.LockError)
    assert issubclass(LockLost, FenceError) and issubclass(LockLost, rx.LockNotOwnedError)
    for name in redis_fence.__all__:
        obj = getattr(redis_fence, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, FenceError), name


# ---- map_error -------------------------------------------------------------------------------


def test_redis_py_takes_err_off_and_keeps_other_codes() -> None:
    # What map_error relies on: ERR is stripped, the module's own codes are kept.
    assert str(reply("ERR quantity must be an integer from 1 to 5")) == (
        "quantity must be an integer from 1 to 5"
    )
    assert str(reply("STALE 1 k")) == "STALE 1 k"
    assert type(reply("STALE 1 k")) is rx.ResponseError
    assert type(reply("LIMIT buyer u has 1 of at most 1")) is rx.ResponseError


def test_stale_single() -> None:
    e = mapped("STALE fencing token 99 is below the highest accepted token 100")
    assert type(e) is StaleToken
    assert (e.token, e.highest, e.index, e.key) == (99, 100, None, None)
    assert e.code == "STALE"
    assert e.message == "STALE fencing token 99 is below the highest accepted token 100"
    assert str(e) == e.message


def test_stale_cart_item() -> None:
    e = mapped("STALE 2 {c}:b")
    assert type(e) is StaleToken
    assert (e.token, e.highest, e.index, e.key) == (None, None, 2, "{c}:b")


def test_stale_unparsable_is_still_stale() -> None:
    e = mapped("STALE something else")
    assert type(e) is StaleToken
    assert (e.token, e.highest, e.index, e.key) == (None, None, None, None)


def test_limit_single_with_escaped_buyer() -> None:
    text = "LIMIT buyer Jos\\xc3\\xa9 has 2 of at most 3"
    e = mapped(text)
    assert type(e) is LimitExceeded
    assert (e.buyer, e.holds, e.limit, e.index, e.key) == ("Jos\\xc3\\xa9", 2, 3, None, None)
    assert e.code == "LIMIT" and e.message == text


def test_limit_buyer_with_spaces_and_numbers() -> None:
    e = mapped("LIMIT buyer user 7 has 1 of at most 1 has 4 of at most 5")
    assert type(e) is LimitExceeded
    assert (e.buyer, e.holds, e.limit) == ("user 7 has 1 of at most 1", 4, 5)


def test_limit_cart_item() -> None:
    e = mapped("LIMIT 3 {s}:charger")
    assert type(e) is LimitExceeded
    assert (e.buyer, e.holds, e.limit, e.index, e.key) == (None, None, None, 3, "{s}:charger")


def test_nokey_ledgerfull_cart_items() -> None:
    e = mapped("NOKEY 1 {s}:a b")
    assert type(e) is NoSuchStock
    assert (e.index, e.key, e.code) == (1, "{s}:a b", "NOKEY")
    f = mapped("LEDGERFULL 256 k")
    assert type(f) is LedgerFull
    assert (f.index, f.key, f.code, f.message) == (256, "k", "LEDGERFULL", "LEDGERFULL 256 k")


def test_soldout_reply_is_a_plain_command_error() -> None:
    # A cart's SOLDOUT is a result (Cart.place returns CartSoldOut); as an error it stays generic.
    e = mapped("SOLDOUT 2 {s}:b")
    assert type(e) is CommandError
    assert (e.code, e.message) == ("SOLDOUT", "SOLDOUT 2 {s}:b")
    keys = ["{s}:a", "{s}:b"]
    assert p.cart_sold_out(reply("SOLDOUT 2 {s}:b"), keys) == CartSoldOut(2, "{s}:b")
    assert p.cart_sold_out(reply("NOKEY 2 {s}:b"), keys) is None
    assert p.cart_sold_out(reply("ERR something else"), keys) is None


def test_cart_refusals_name_the_callers_own_key() -> None:
    """The item's key is the cart's own key object (bytes stay bytes, str stays str), not the
    server's escaped text, which is cut after 64 bytes."""
    raw, long_key = b"{s}:\xff\x00 x", "{s}:" + "k" * 100
    keys: list[p.KeyT] = ["{s}:a", raw, long_key]
    sold_out = p.cart_sold_out(reply("SOLDOUT 2 {s}:\\xff\\x00 x"), keys)
    assert sold_out == CartSoldOut(2, raw)
    assert isinstance(sold_out, CartSoldOut) and sold_out.key is raw
    shown = "{s}:" + "k" * 60 + "..."
    cut = p.cart_sold_out(reply(f"SOLDOUT 3 {shown}"), keys)
    assert isinstance(cut, CartSoldOut) and cut.key is long_key
    # An index the cart does not have (never sent by the server): the text as shown.
    assert p.cart_sold_out(reply("SOLDOUT 9 {s}:z"), keys) == CartSoldOut(9, "{s}:z")
    for text, cls in [
        ("NOKEY 2 {s}:\\xff\\x00 x", NoSuchStock),
        ("STALE 2 {s}:\\xff\\x00 x", StaleToken),
        ("LIMIT 2 {s}:\\xff\\x00 x", LimitExceeded),
        ("LEDGERFULL 2 {s}:\\xff\\x00 x", LedgerFull),
    ]:
        e = p.with_cart_key(mapped(text), keys)
        assert type(e) is cls, text
        assert (getattr(e, "index", None), getattr(e, "key", None)) == (2, raw), text
    partial = p.with_cart_key(
        mapped(
            "ERR request o is in the ledger of some of the cart's stocks only "
            f"(item 3 {shown} has it)"
        ),
        keys,
    )
    assert type(partial) is PartialCart
    assert (partial.index, partial.key) == (3, long_key)
    # A single-stock refusal (no index) keeps what it has.
    single = p.with_cart_key(
        mapped("STALE fencing token 1 is below the highest accepted token 2"), keys
    )
    assert type(single) is StaleToken and (single.index, single.key) == (None, None)


def test_expired_and_refunded() -> None:
    e = mapped("EXPIRED request order 7 expired at 1796098630777")
    assert type(e) is HoldExpired
    assert (e.request_id, e.deadline_ms, e.code) == ("order 7", 1796098630777, "EXPIRED")
    f = mapped("REFUNDED request o\\x27x was refunded")
    assert type(f) is AlreadyRefunded
    assert (f.request_id, f.code) == ("o\\x27x", "REFUNDED")


def test_wrongtype_unblocked_tryagain() -> None:
    e = mapped("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert type(e) is WrongType and e.code == "WRONGTYPE"
    assert e.message == "WRONGTYPE Operation against a key holding the wrong kind of value"
    u = mapped("UNBLOCKED force unblock from blocking operation, instance state changed")
    assert type(u) is Unblocked and u.code == "UNBLOCKED"
    # TRYAGAIN is Unblocked only for a waiting LOCK.ACQUIRE (the lock maps it there); anywhere
    # else it is redis-py's own TryAgainError, returned as it is.
    t = reply("TRYAGAIN the lock's hash slot left this node while waiting; retry LOCK.ACQUIRE")
    assert isinstance(t, rx.TryAgainError)
    assert map_error(t) is t
    multi = reply("TRYAGAIN Multiple keys request during rehashing of slot")
    assert isinstance(multi, rx.TryAgainError)
    assert map_error(multi) is multi


def test_partial_cart() -> None:
    text = (
        "ERR request o 2 is in the ledger of some of the cart's stocks only (item 2 {c}:b x has it)"
    )
    e = mapped(text)
    assert type(e) is PartialCart
    assert (e.request_id, e.index, e.key, e.code) == ("o 2", 2, "{c}:b x", "ERR")
    assert e.message == text


def test_buyer_required() -> None:
    text = "ERR this stock limits each buyer to 7 units: STOCK.DEDUCT needs BUYER"
    e = mapped(text)
    assert type(e) is BuyerRequired
    assert (e.limit, e.code, e.message) == (7, "ERR", text)


@pytest.mark.parametrize("which", ["request", "restock"])
def test_ledger_full_single(which: str) -> None:
    text = f"ERR {which} ledger is full (1 entries, fence.max-ledger-entries): start a new sale"
    e = mapped(text)
    assert type(e) is LedgerFull
    assert (e.code, e.message, e.index, e.key) == ("ERR", text, None, None)


@pytest.mark.parametrize(
    "text",
    [
        "ERR quantity must be an integer from 1 to 9223372036854775807",
        "ERR MAXLEN needs an integer of 0 or more",
        "ERR HOLD needs ID: a hold lives in the request ledger under its request id",
        "ERR this command needs a stock created by STOCK.SET, not a plain string",
        "ERR value is not an integer or out of range",
        "ERR key k appears twice in the cart",
    ],
)
def test_other_err_replies(text: str) -> None:
    e = mapped(text)
    assert type(e) is CommandError
    assert (e.code, e.message, str(e)) == ("ERR", text, text)


@pytest.mark.parametrize(
    "text",
    [
        "NOREPLICAS Not enough good replicas to write.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
    ],
)
def test_other_codes_are_kept(text: str) -> None:
    e = mapped(text)
    assert type(e) is CommandError
    assert (e.code, e.message) == (text.split(" ")[0], text)


def test_redis_py_subclasses_are_returned_unchanged() -> None:
    for text in ("MOVED 3999 127.0.0.1:6381", "ASK 3999 127.0.0.1:6381", "READONLY x", "OOM x"):
        error = reply(text)
        assert type(error) is not rx.ResponseError
        assert isinstance(error, rx.ResponseError)
        assert map_error(error) is error
    crossslot = reply("CROSSSLOT Keys in request don't hash to the same slot")
    assert isinstance(crossslot, rx.ClusterCrossSlotError)
    assert map_error(crossslot) is crossslot


def test_fence_errors_pass_through() -> None:
    e = StaleToken("STALE 1 k", index=1, key="k")
    assert map_error(e) is e


# ---- builders ------------------------------------------------------------------------------


def test_stock_set_and_limit() -> None:
    assert p.stock_set("k", 0, None) == ["STOCK.SET", "k", 0]
    assert p.stock_set(b"k", MAX, 0) == ["STOCK.SET", b"k", MAX, "LIMIT", 0]
    assert p.stock_set("k", 5, 2) == ["STOCK.SET", "k", 5, "LIMIT", 2]
    assert p.stock_limit("k", 0) == ["STOCK.LIMIT", "k", 0]
    for bad in (-1, MAX + 1):
        with pytest.raises(ValueError):
            p.stock_set("k", bad, None)
        with pytest.raises(ValueError):
            p.stock_set("k", 1, bad)
        with pytest.raises(ValueError):
            p.stock_limit("k", bad)
    for wrong in (True, 1.0, "1", None):
        with pytest.raises(TypeError):
            p.stock_set("k", wrong, None)  # type: ignore[arg-type]


def test_stock_add() -> None:
    assert p.stock_add("k", 1, None) == ["STOCK.ADD", "k", 1]
    assert p.stock_add("k", 3, "r-1") == ["STOCK.ADD", "k", 3, "ID", "r-1"]
    with pytest.raises(ValueError):
        p.stock_add("k", 0, None)
    with pytest.raises(ValueError):
        p.stock_add("k", 1, "")
    with pytest.raises(ValueError):
        p.stock_add("k", 1, b"")
    # An int id is sent as its digits; a bool is refused.
    assert p.stock_add("k", 1, 7) == ["STOCK.ADD", "k", 1, "ID", "7"]
    assert p.stock_add("k", 1, 0) == ["STOCK.ADD", "k", 1, "ID", "0"]
    with pytest.raises(TypeError):
        p.stock_add("k", 1, True)
    with pytest.raises(TypeError):
        p.stock_add("k", 1, 1.5)  # type: ignore[arg-type]


def test_stock_deduct_every_option() -> None:
    assert p.stock_deduct("k", 1, None, None, None, None, None) == ["STOCK.DEDUCT", "k", 1]
    args = p.stock_deduct("k", 2, "o-1", "user 7", 1.5, 42, Events("ev", 10, True))
    assert args == [
        "STOCK.DEDUCT",
        "k",
        2,
        "ID",
        "o-1",
        "BUYER",
        "user 7",
        "HOLD",
        1500,
        "FENCE",
        42,
        "EVENTS",
        "ev",
        "MAXLEN",
        "~",
        10,
    ]
    # The whole call is at most 16 option words (README): this one, the longest, is 13.
    assert len(args) - 3 == 13


def test_int_ids_and_buyers_are_sent_as_digits() -> None:
    assert p.stock_deduct("k", 1, 1001, 7, None, None, None) == [
        "STOCK.DEDUCT",
        "k",
        1,
        "ID",
        "1001",
        "BUYER",
        "7",
    ]
    assert p.stock_refund("k", 1001, None) == ["STOCK.REFUND", "k", "1001"]
    assert p.stock_confirm("k", -3) == ["STOCK.CONFIRM", "k", "-3"]
    assert p.stock_request("k", 1001) == ["STOCK.REQUEST", "k", "1001", "DETAIL"]
    assert p.stock_buyer("k", 7) == ["STOCK.BUYER", "k", "7"]
    items = p.cart_items({"{s}:a": 1})
    assert p.stock_cart(items, 42, 7, None, None, None) == [
        "STOCK.CART",
        1,
        "{s}:a",
        1,
        "ID",
        "42",
        "BUYER",
        "7",
    ]
    assert p.cart_keys_command("STOCK.CART.REFUND", ("{s}:a",), 42)[-1] == "42"
    for build in (
        lambda: p.stock_deduct("k", 1, True, None, None, None, None),
        lambda: p.stock_deduct("k", 1, "o", False, None, None, None),
        lambda: p.stock_refund("k", True, None),
        lambda: p.stock_request("k", False),
        lambda: p.stock_buyer("k", True),
        lambda: p.stock_cart(items, True, None, None, None, None),
        lambda: p.cart_keys_command("STOCK.CART.CONFIRM", ("{s}:a",), False),
    ):
        with pytest.raises(TypeError):
            build()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"quantity": 0}, ValueError),
        ({"quantity": -1}, ValueError),
        ({"quantity": MAX + 1}, ValueError),
        ({"quantity": True}, TypeError),
        ({"quantity": 1.0}, TypeError),
        ({"id": ""}, ValueError),
        ({"id": True}, TypeError),
        ({"id": 1.0}, TypeError),
        ({"id": "o", "buyer": False}, TypeError),
        ({"id": "o", "buyer": 2.5}, TypeError),
        ({"id": "o", "buyer": ""}, ValueError),
        ({"buyer": "u"}, ValueError),
        ({"hold": 1.0}, ValueError),
        ({"id": "o", "hold": 0}, ValueError),
        ({"id": "o", "hold": -0.5}, ValueError),
        ({"id": "o", "hold": math.nan}, ValueError),
        ({"id": "o", "hold": math.inf}, ValueError),
        ({"id": "o", "hold": True}, TypeError),
        ({"id": "o", "hold": "1"}, TypeError),
        ({"fence": 0}, ValueError),
        ({"fence": -5}, ValueError),
        ({"fence": True}, TypeError),
        ({"fence": 1.5}, TypeError),
        ({"events": Events("ev", -1)}, ValueError),
    ],
)
def test_stock_deduct_bad_arguments(kwargs: dict[str, Any], error: type) -> None:
    full: dict[str, Any] = {
        "quantity": 1,
        "id": None,
        "buyer": None,
        "hold": None,
        "fence": None,
        "events": None,
    }
    full.update(kwargs)
    with pytest.raises(error):
        p.stock_deduct("k", **full)


def test_events_args() -> None:
    assert p.events_args(None) == []
    assert p.events_args("ev") == ["EVENTS", "ev"]
    assert p.events_args(b"ev") == ["EVENTS", b"ev"]
    assert p.events_args(Events("ev")) == ["EVENTS", "ev"]
    assert p.events_args(Events("ev", 0)) == ["EVENTS", "ev", "MAXLEN", "=", 0]
    assert p.events_args(Events("ev", 5, approximate=True)) == ["EVENTS", "ev", "MAXLEN", "~", 5]


def test_refund_confirm_request_buyer() -> None:
    assert p.stock_refund("k", "o", None) == ["STOCK.REFUND", "k", "o"]
    assert p.stock_refund("k", "o", Events("e", 3)) == [
        "STOCK.REFUND",
        "k",
        "o",
        "EVENTS",
        "e",
        "MAXLEN",
        "=",
        3,
    ]
    assert p.stock_confirm("k", "o") == ["STOCK.CONFIRM", "k", "o"]
    assert p.stock_request("k", "o") == ["STOCK.REQUEST", "k", "o", "DETAIL"]
    assert p.stock_buyer("k", "u") == ["STOCK.BUYER", "k", "u"]
    for build in (
        lambda: p.stock_refund("k", "", None),
        lambda: p.stock_confirm("k", ""),
        lambda: p.stock_request("k", b""),
        lambda: p.stock_buyer("k", ""),
    ):
        with pytest.raises(ValueError):
            build()


@pytest.mark.parametrize(
    ("seconds", "ms"),
    [(0.0001, 1), (0.001, 1), (0.0011, 2), (0.05, 50), (1, 1000), (2.5, 2500), (1.1, 1100)],
)
def test_seconds_to_ms(seconds: float, ms: int) -> None:
    assert p.seconds_to_ms(seconds, "hold") == ms


@pytest.mark.parametrize("seconds", [4.03, 2.007, 8.05])
def test_seconds_to_ms_exact_milliseconds(seconds: float) -> None:
    assert p.seconds_to_ms(seconds, "hold") == round(seconds * 1000)


# ---- carts ------------------------------------------------------------------------------------


def test_cart_items_mapping_and_pairs() -> None:
    assert p.cart_items({"a": 1, "b": 2}) == [("a", 1), ("b", 2)]
    assert p.cart_items([("a", 1), (b"b", 2)]) == [("a", 1), (b"b", 2)]
    assert p.cart_items((("a", 1),)) == [("a", 1)]
    assert len(p.cart_items([(f"{{s}}:{i}", 1) for i in range(256)])) == 256


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ([], ValueError),
        ({}, ValueError),
        ([(f"k{i}", 1) for i in range(257)], ValueError),
        ([("a", 1), ("a", 2)], ValueError),
        ([("a", 1), (b"a", 2)], ValueError),
        ([("a", 0)], ValueError),
        ([("a", MAX + 1)], ValueError),
        ([("a", True)], TypeError),
    ],
)
def test_cart_items_refused(items: Any, error: type) -> None:
    with pytest.raises(error):
        p.cart_items(items)


def test_stock_cart_args() -> None:
    items = p.cart_items({"{s}:a": 1, "{s}:b": 2})
    assert p.stock_cart(items, "o", None, None, None, None) == [
        "STOCK.CART",
        2,
        "{s}:a",
        1,
        "{s}:b",
        2,
        "ID",
        "o",
    ]
    assert p.stock_cart(items, "o", "u", 900, 7, "{s}:ev") == [
        "STOCK.CART",
        2,
        "{s}:a",
        1,
        "{s}:b",
        2,
        "ID",
        "o",
        "BUYER",
        "u",
        "HOLD",
        900000,
        "FENCE",
        7,
        "EVENTS",
        "{s}:ev",
    ]
    with pytest.raises(ValueError):
        p.stock_cart(items, "", None, None, None, None)
    with pytest.raises(ValueError):
        p.stock_cart(items, "o", None, 0, None, None)
    with pytest.raises(ValueError):
        p.stock_cart(items, "o", None, None, 0, None)


def test_cart_keys_command() -> None:
    assert p.cart_keys_command("STOCK.CART.REFUND", ("a", "b"), "o") == [
        "STOCK.CART.REFUND",
        2,
        "a",
        "b",
        "o",
    ]
    with pytest.raises(ValueError):
        p.cart_keys_command("STOCK.CART.CONFIRM", (), "o")
    with pytest.raises(ValueError):
        p.cart_keys_command("STOCK.CART.CONFIRM", tuple(f"k{i}" for i in range(257)), "o")
    with pytest.raises(ValueError):
        p.cart_keys_command("STOCK.CART.CONFIRM", ("a",), "")


# ---- parsers --------------------------------------------------------------------------------


def test_parse_deduct_and_cart() -> None:
    assert p.parse_deduct(None) == SoldOut()
    assert p.parse_deduct(0) == Deducted(0)
    assert p.parse_deduct(b"7") == Deducted(7)
    assert p.parse_deduct(MAX) == Deducted(MAX)
    assert Deducted(1).ok is True and SoldOut().ok is False
    assert p.parse_cart([9, 0]) == CartPlaced((9, 0))
    assert CartPlaced((1,)).ok is True and CartSoldOut(1, "k").ok is False
    assert p.parse_int_list([b"1", 0]) == (1, 0)
    with pytest.raises(CommandError):
        p.parse_cart(5)
    with pytest.raises(CommandError):
        p.parse_deduct([1])


@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("resp3", [False, True])
def test_parse_request_shapes(decode: bool, resp3: bool) -> None:
    def s(text: str) -> Any:
        return text if decode else text.encode()

    def shape(*pairs: tuple[str, Any]) -> Any:
        if resp3:
            return {s(k): v for k, v in pairs}
        return [x for k, v in pairs for x in (s(k), v)]

    assert p.parse_request(None) is None
    held = p.parse_request(
        shape(("state", s("held")), ("quantity", 2), ("deadline", 1796098635800), ("buyer", s("u")))
    )
    assert held == RequestInfo("held", 2, 1796098635800, "u")
    assert held is not None and held.holds == 2
    refunded = p.parse_request(shape(("state", s("refunded")), ("quantity", 3)))
    assert refunded == RequestInfo("refunded", 3, None, None)
    assert refunded is not None and refunded.holds == 0
    expired = p.parse_request(shape(("state", s("expired")), ("quantity", 1)))
    assert expired is not None and expired.holds == 0
    for state in ("deducted", "confirmed"):
        info = p.parse_request(shape(("state", s(state)), ("quantity", 4)))
        assert info is not None and (info.state, info.holds) == (state, 4)
    with pytest.raises(CommandError):
        p.parse_request(shape(("state", s("lost")), ("quantity", 1)))


def test_parse_request_non_utf8_buyer() -> None:
    info = p.parse_request([b"state", b"deducted", b"quantity", 1, b"buyer", b"\xff\xfeu"])
    assert info is not None and info.buyer == "\ufffd\ufffdu"


def test_parse_info() -> None:
    fields = [
        ("available", 19),
        ("deducted", 4),
        ("requests", 3),
        ("fence", 42),
        ("restocks", 1),
        ("held", 2),
        ("held-units", 4),
        ("next-deadline", 1796098635800),
        ("limit", 5),
        ("buyers", 2),
    ]
    expected = StockInfo(19, 4, 3, 42, 1, 2, 4, 1796098635800, 5, 2, False, {})
    assert p.parse_info([x for k, v in fields for x in (k.encode(), v)]) == expected
    assert p.parse_info(dict(fields)) == expected
    later = p.parse_info(dict([*fields, ("newfield", b"x")]))
    assert later is not None and later.extra == {"newfield": b"x"}
    assert later.available == 19 and not later.plain
    assert p.parse_info([b"available", 5]) == StockInfo(available=5, plain=True)
    assert p.parse_info({"available": 5}) == StockInfo(available=5, plain=True)
    assert p.parse_info(None) is None
    with pytest.raises(CommandError):
        p.parse_info([b"available"])


def test_reply_shapes() -> None:
    assert p.as_int(b"-3") == -3 and p.as_int("12") == 12 and p.as_int(True) == 1
    assert p.as_str(b"\xc3\xa9") == "\u00e9" and p.as_str(5) == "5"
    assert p.as_map({b"a": 1}) == {"a": 1}
    assert p.as_map([b"a", 1, "b", 2]) == {"a": 1, "b": 2}
    with pytest.raises(CommandError):
        p.as_int(None)
    with pytest.raises(CommandError):
        p.as_list(b"x")
