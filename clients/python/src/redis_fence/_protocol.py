"""The commands' arguments and replies: pure functions shared by the sync and async APIs.

Nothing here does I/O. Arguments are checked before anything is sent where the client can
tell (a quantity below 1, a TTL of 0 seconds): a ``ValueError`` then, never a half-sent call.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import CommandError
from .results import (
    CartPlaced,
    CartResult,
    CartSoldOut,
    Deducted,
    DeductResult,
    Events,
    LockStatus,
    RequestInfo,
    RequestState,
    SoldOut,
    StockInfo,
)

KeyT = str | bytes
# Request, restock and buyer ids: any bytes to the server; an int is sent as its digits.
IdT = str | bytes | int
Arg = str | bytes | int
EventsArg = None | str | bytes | Events

MAX_QUANTITY = (1 << 63) - 1
MAX_CART_ITEMS = 256
_STATES = ("deducted", "held", "confirmed", "refunded", "expired")


def refuse_pipeline(client: object) -> None:
    """``TypeError`` for a redis-py pipeline: its calls answer only at ``execute()``, so no
    typed result (nor a lock's decision) can be made from them. Send raw commands there."""
    from redis.asyncio.client import Pipeline as AsyncPipeline
    from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
    from redis.client import Pipeline
    from redis.cluster import ClusterPipeline

    if isinstance(client, (Pipeline, ClusterPipeline, AsyncPipeline, AsyncClusterPipeline)):
        raise TypeError(
            "redis_fence takes a client, not a pipeline: its results are read from each reply; "
            "in a pipeline send the commands raw (pipe.execute_command('STOCK.DEDUCT', ...))"
        )


def default_owner() -> str:
    """A unique owner: ``host:pid:random``, readable in ``LOCK.STATUS``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


def seconds_to_ms(value: float, name: str) -> int:
    """Float seconds to whole milliseconds (rounded up, at least 1); ``ValueError`` when
    ``value`` is not a finite number above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value <= 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number of seconds above 0, not {value!r}")
    # Rounded to a microsecond first, so float noise (4.03 * 1000 = 4030.000000000004)
    # does not add a millisecond.
    return max(1, math.ceil(round(value * 1000, 3)))


def wait_to_ms(wait: float | None) -> int | None:
    """``wait`` of a lock: None (no ``WAIT``), ``math.inf`` (``WAIT 0``, no limit) or seconds."""
    if wait is None:
        return None
    if isinstance(wait, bool) or not isinstance(wait, (int, float)):
        raise TypeError(f"wait must be None or a number of seconds, not {type(wait).__name__}")
    if isinstance(wait, float) and math.isinf(wait) and wait > 0:
        return 0
    return seconds_to_ms(wait, "wait")


def _quantity(value: int, name: str = "quantity", low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= MAX_QUANTITY:
        raise ValueError(f"{name} must be an integer from {low} to {MAX_QUANTITY}, not {value}")
    return value


def _token(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int token, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive token, not {value}")
    return value


def events_args(events: EventsArg) -> list[Arg]:
    if events is None:
        return []
    if isinstance(events, (str, bytes)):
        return ["EVENTS", events]
    args: list[Arg] = ["EVENTS", events.stream]
    if events.maxlen is not None:
        args += [
            "MAXLEN",
            "~" if events.approximate else "=",
            _quantity(events.maxlen, "maxlen", 0),
        ]
    return args


# ---- locks -------------------------------------------------------------------------------


def lock_acquire(key: KeyT, owner: str, ttl_ms: int, wait_ms: int | None) -> list[Arg]:
    args: list[Arg] = ["LOCK.ACQUIRE", key, owner, ttl_ms]
    if wait_ms is not None:
        args += ["WAIT", wait_ms]
    return args


def lock_renew(key: KeyT, owner: str, ttl_ms: int, token: int | None) -> list[Arg]:
    args: list[Arg] = ["LOCK.RENEW", key, owner, ttl_ms]
    if token is not None:
        args += ["TOKEN", token]
    return args


def lock_release(key: KeyT, owner: str, token: int | None) -> list[Arg]:
    args: list[Arg] = ["LOCK.RELEASE", key, owner]
    if token is not None:
        args += ["TOKEN", token]
    return args


def parse_token(reply: Any) -> int | None:
    if reply is None:
        return None
    return as_int(reply)


def parse_lock_status(reply: Any) -> LockStatus | None:
    if reply is None:
        return None
    fields = as_map(reply)
    return LockStatus(
        owner=as_str(fields.get("owner", b"")),
        token=as_int(fields.get("token", 0)),
        ttl_ms=as_int(fields.get("ttl", -1)),
        waiters=as_int(fields.get("waiters", 0)),
    )


# ---- stocks ------------------------------------------------------------------------------


def stock_set(key: KeyT, quantity: int, limit: int | None) -> list[Arg]:
    args: list[Arg] = ["STOCK.SET", key, _quantity(quantity, low=0)]
    if limit is not None:
        args += ["LIMIT", _quantity(limit, "limit", 0)]
    return args


def stock_limit(key: KeyT, per_buyer: int) -> list[Arg]:
    return ["STOCK.LIMIT", key, _quantity(per_buyer, "per_buyer", 0)]


def stock_add(key: KeyT, quantity: int, id: IdT | None) -> list[Arg]:
    args: list[Arg] = ["STOCK.ADD", key, _quantity(quantity)]
    if id is not None:
        args += ["ID", _nonempty(id, "id")]
    return args


def _nonempty(value: IdT, name: str) -> str | bytes:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be str, bytes or int, not {type(value).__name__}")
    if len(value) == 0:
        raise ValueError(f"{name} must not be empty")
    return value


def _common_options(
    id: IdT | None,
    buyer: IdT | None,
    hold: float | None,
    fence: int | None,
    events: EventsArg,
    needs_id: str,
) -> list[Arg]:
    args: list[Arg] = []
    if id is not None:
        args += ["ID", _nonempty(id, "id")]
    if buyer is not None:
        if id is None:
            raise ValueError(
                f"buyer needs an id ({needs_id}): a buyer's units are counted from the ledger"
            )
        args += ["BUYER", _nonempty(buyer, "buyer")]
    if hold is not None:
        if id is None:
            raise ValueError(f"hold needs an id ({needs_id}): a hold lives in the ledger")
        args += ["HOLD", seconds_to_ms(hold, "hold")]
    if fence is not None:
        args += ["FENCE", _token(fence, "fence")]
    return args + events_args(events)


def stock_deduct(
    key: KeyT,
    quantity: int,
    id: IdT | None,
    buyer: IdT | None,
    hold: float | None,
    fence: int | None,
    events: EventsArg,
) -> list[Arg]:
    return [
        "STOCK.DEDUCT",
        key,
        _quantity(quantity),
        *_common_options(id, buyer, hold, fence, events, "STOCK.DEDUCT … ID"),
    ]


def parse_deduct(reply: Any) -> DeductResult:
    if reply is None:
        return SoldOut()
    return Deducted(as_int(reply))


def stock_refund(key: KeyT, id: IdT, events: EventsArg) -> list[Arg]:
    return ["STOCK.REFUND", key, _nonempty(id, "id"), *events_args(events)]


def stock_confirm(key: KeyT, id: IdT) -> list[Arg]:
    return ["STOCK.CONFIRM", key, _nonempty(id, "id")]


def stock_request(key: KeyT, id: IdT) -> list[Arg]:
    return ["STOCK.REQUEST", key, _nonempty(id, "id"), "DETAIL"]


def parse_request(reply: Any) -> RequestInfo | None:
    if reply is None:
        return None
    fields = as_map(reply)
    state = as_str(fields.get("state", b""))
    if state not in _STATES:
        raise CommandError("ERR", f"unexpected request state {state!r} in STOCK.REQUEST's reply")
    deadline = fields.get("deadline")
    buyer = fields.get("buyer")
    return RequestInfo(
        state=_state(state),
        quantity=as_int(fields.get("quantity", 0)),
        deadline_ms=None if deadline is None else as_int(deadline),
        buyer=None if buyer is None else as_str(buyer),
    )


def _state(value: str) -> RequestState:
    if value == "deducted":
        return "deducted"
    if value == "held":
        return "held"
    if value == "confirmed":
        return "confirmed"
    if value == "refunded":
        return "refunded"
    return "expired"


def stock_buyer(key: KeyT, buyer: IdT) -> list[Arg]:
    return ["STOCK.BUYER", key, _nonempty(buyer, "buyer")]


_INFO_FIELDS = {
    "available": "available",
    "deducted": "deducted",
    "requests": "requests",
    "fence": "fence",
    "restocks": "restocks",
    "held": "held",
    "held-units": "held_units",
    "next-deadline": "next_deadline_ms",
    "limit": "limit",
    "buyers": "buyers",
}


def parse_info(reply: Any) -> StockInfo | None:
    if reply is None:
        return None
    fields = as_map(reply)
    known: dict[str, int] = {}
    extra: dict[str, object] = {}
    for name, value in fields.items():
        if name in _INFO_FIELDS:
            known[_INFO_FIELDS[name]] = as_int(value)
        else:
            extra[name] = value
    available = known.pop("available", 0)
    plain = len(fields) == 1 and "available" in fields
    return StockInfo(available=available, plain=plain, extra=extra, **known)


# ---- carts -------------------------------------------------------------------------------


def cart_items(items: Mapping[KeyT, int] | Sequence[tuple[KeyT, int]]) -> list[tuple[KeyT, int]]:
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    if not 1 <= len(pairs) <= MAX_CART_ITEMS:
        raise ValueError(f"a cart has from 1 to {MAX_CART_ITEMS} items, not {len(pairs)}")
    seen = set()
    out: list[tuple[KeyT, int]] = []
    for key, quantity in pairs:
        norm = key.encode() if isinstance(key, str) else key
        if norm in seen:
            raise ValueError(f"key {key!r} appears twice in the cart")
        seen.add(norm)
        out.append((key, _quantity(quantity)))
    return out


def stock_cart(
    items: Sequence[tuple[KeyT, int]],
    id: IdT,
    buyer: IdT | None,
    hold: float | None,
    fence: int | None,
    events: EventsArg,
) -> list[Arg]:
    args: list[Arg] = ["STOCK.CART", len(items)]
    for key, quantity in items:
        args += [key, quantity]
    return args + _common_options(_nonempty(id, "id"), buyer, hold, fence, events, "a cart's id")


def cart_keys_command(name: str, keys: Sequence[KeyT], id: IdT) -> list[Arg]:
    if not 1 <= len(keys) <= MAX_CART_ITEMS:
        raise ValueError(f"a cart has from 1 to {MAX_CART_ITEMS} items, not {len(keys)}")
    return [name, len(keys), *keys, _nonempty(id, "id")]


def parse_cart(reply: Any) -> CartPlaced:
    return CartPlaced(tuple(as_int(v) for v in as_list(reply)))


def cart_sold_out(error: Exception, keys: Sequence[KeyT]) -> CartResult | None:
    """A cart's ``SOLDOUT <index> <key>`` refusal as a result (any other error: None)."""
    from .errors import cart_item_refusal

    item = cart_item_refusal(str(error))
    if item is not None and item[0] == "SOLDOUT":
        return CartSoldOut(item[1], _cart_key(keys, item[1], item[2]))
    return None


def with_cart_key(error: Exception, keys: Sequence[KeyT]) -> Exception:
    """A cart refusal naming item ``index`` gets that item's key as the cart names it (the
    message shows it escaped and cut after 64 bytes)."""
    index = getattr(error, "index", None)
    if isinstance(index, int) and hasattr(error, "key"):
        error.key = _cart_key(keys, index, error.key)
    return error


def _cart_key(keys: Sequence[KeyT], index: int, shown: KeyT) -> KeyT:
    return keys[index - 1] if 1 <= index <= len(keys) else shown


def parse_int_list(reply: Any) -> tuple[int, ...]:
    return tuple(as_int(v) for v in as_list(reply))


# ---- reply shapes ------------------------------------------------------------------------


def as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, str)):
        return int(value)
    raise CommandError("ERR", f"expected an integer reply, got {value!r}")


def as_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    return str(value)


def as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise CommandError("ERR", f"expected an array reply, got {value!r}")


def as_map(value: Any) -> dict[str, Any]:
    """A RESP3 map (dict) or a RESP2 flat field/value array, with ``str`` field names."""
    if isinstance(value, dict):
        return {as_str(k): v for k, v in value.items()}
    items = as_list(value)
    if len(items) % 2:
        raise CommandError("ERR", f"expected field/value pairs, got {value!r}")
    return {as_str(items[i]): items[i + 1] for i in range(0, len(items), 2)}
