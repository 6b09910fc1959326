"""Stocks and carts on ``STOCK.*`` (sync)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as rx

from . import _protocol as p
from ._route import SyncClient, run_keyed
from .errors import map_error
from .results import CartResult, DeductResult, RequestInfo, StockInfo

__all__ = ["Cart", "Stock"]


def _run(client: SyncClient, key: p.KeyT, args: list[p.Arg]) -> Any:
    try:
        return run_keyed(client, key, args)
    except rx.ResponseError as e:
        raise map_error(e) from None


def _run_cart(client: SyncClient, keys: tuple[p.KeyT, ...], args: list[p.Arg]) -> Any:
    try:
        return run_keyed(client, keys[0], args)
    except rx.ResponseError as e:
        raise p.with_cart_key(map_error(e), keys) from None


class Stock:
    """The stock at ``key``: one method per ``STOCK.*`` command, on the caller's client (its
    timeouts and retries apply; pass ``id`` to every write that may be sent twice)."""

    def __init__(self, client: SyncClient, key: p.KeyT) -> None:
        p.refuse_pipeline(client)
        self.client = client
        self.key = key

    def set(self, quantity: int, limit: int | None = None) -> None:
        """``STOCK.SET``: start a sale of ``quantity`` units (``limit`` per buyer; 0 clears it,
        None keeps the stock's). Not safe to resend after sales began: it starts over."""
        _run(self.client, self.key, p.stock_set(self.key, quantity, limit))

    def set_limit(self, per_buyer: int) -> bool:
        """``STOCK.LIMIT``: change the running sale's limit per buyer (0 clears it). False when
        the stock does not exist."""
        return p.as_int(_run(self.client, self.key, p.stock_limit(self.key, per_buyer))) == 1

    def add(self, quantity: int, id: p.IdT | None = None) -> int:
        """``STOCK.ADD``: restock; the available quantity after. With ``id``, at most once."""
        return p.as_int(_run(self.client, self.key, p.stock_add(self.key, quantity, id)))

    def get(self) -> int | None:
        """``STOCK.GET``: the available quantity, None when the key does not exist."""
        reply = _run(self.client, self.key, ["STOCK.GET", self.key])
        return None if reply is None else p.as_int(reply)

    def deduct(
        self,
        quantity: int = 1,
        id: p.IdT | None = None,
        *,
        buyer: p.IdT | None = None,
        hold: float | None = None,
        fence: int | None = None,
        events: p.EventsArg = None,
    ) -> DeductResult:
        """``STOCK.DEDUCT``: ``Deducted(remaining)`` or ``SoldOut()``.

        ``id`` makes it idempotent (a replay answers ``Deducted`` with what remains now: ask
        ``request(id)`` what it holds); ``buyer`` counts it against the stock's limit per buyer
        (``LimitExceeded``); ``hold`` (seconds) keeps it until ``confirm`` or its deadline;
        ``fence`` is a lock's token (``StaleToken`` when a newer holder deducted);
        ``events`` a stream key or ``Events(stream, maxlen, approximate)``.
        """
        args = p.stock_deduct(self.key, quantity, id, buyer, hold, fence, events)
        return p.parse_deduct(_run(self.client, self.key, args))

    def refund(self, id: p.IdT, *, events: p.EventsArg = None) -> int:
        """``STOCK.REFUND``: the units returned now (0: unknown, already refunded, expired)."""
        return p.as_int(_run(self.client, self.key, p.stock_refund(self.key, id, events)))

    def confirm(self, id: p.IdT) -> bool:
        """``STOCK.CONFIRM``: True once the request is sold for good (confirmed now or before,
        or never held); False when the id is unknown. ``HoldExpired`` / ``AlreadyRefunded``
        when its hold ended first."""
        return p.as_int(_run(self.client, self.key, p.stock_confirm(self.key, id))) == 1

    def request(self, id: p.IdT) -> RequestInfo | None:
        """``STOCK.REQUEST … DETAIL``: the ledger's entry for ``id`` (state, quantity,
        deadline, buyer), None when unknown. Tells a replay from a fresh deduction."""
        return p.parse_request(_run(self.client, self.key, p.stock_request(self.key, id)))

    def buyer(self, buyer: p.IdT) -> int | None:
        """``STOCK.BUYER``: the units ``buyer`` holds in this sale; None when no such stock."""
        reply = _run(self.client, self.key, p.stock_buyer(self.key, buyer))
        return None if reply is None else p.as_int(reply)

    def info(self) -> StockInfo | None:
        """``STOCK.INFO``, None when the key does not exist."""
        return p.parse_info(_run(self.client, self.key, ["STOCK.INFO", self.key]))


Items = Mapping[p.KeyT, int] | Sequence[tuple[p.KeyT, int]]


class Cart:
    """Several stocks sold together, all or nothing: ``Cart(client, {"{s}:phone": 1,
    "{s}:case": 2})``. On Redis Cluster every key needs one hash tag."""

    def __init__(self, client: SyncClient, items: Items) -> None:
        p.refuse_pipeline(client)
        self.client = client
        self.items = p.cart_items(items)
        self.keys: tuple[p.KeyT, ...] = tuple(k for k, _ in self.items)

    def place(
        self,
        id: p.IdT,
        *,
        buyer: p.IdT | None = None,
        hold: float | None = None,
        fence: int | None = None,
        events: p.EventsArg = None,
    ) -> CartResult:
        """``STOCK.CART``: ``CartPlaced(remaining)`` (fresh or replayed) or
        ``CartSoldOut(index, key)``. Other refusals raise (``NoSuchStock``, ``StaleToken``,
        ``LimitExceeded``, ``LedgerFull``, ``PartialCart``), each with ``index`` and ``key``."""
        args = p.stock_cart(self.items, id, buyer, hold, fence, events)
        try:
            reply = run_keyed(self.client, self.keys[0], args)
        except rx.ResponseError as e:
            sold_out = p.cart_sold_out(e, self.keys)
            if sold_out is not None:
                return sold_out
            raise p.with_cart_key(map_error(e), self.keys) from None
        return p.parse_cart(reply)

    def refund(self, id: p.IdT, *, events: p.EventsArg = None) -> tuple[int, ...]:
        """``STOCK.CART.REFUND``: the units each stock returned, in order."""
        args = p.cart_keys_command("STOCK.CART.REFUND", self.keys, id) + p.events_args(events)
        return p.parse_int_list(_run_cart(self.client, self.keys, args))

    def confirm(self, id: p.IdT) -> bool:
        """``STOCK.CART.CONFIRM``: True when every item is confirmed (now or before), False
        when no stock knows the id; ``HoldExpired`` / ``AlreadyRefunded`` otherwise."""
        args = p.cart_keys_command("STOCK.CART.CONFIRM", self.keys, id)
        return p.as_int(_run_cart(self.client, self.keys, args)) == 1

    def request(self, id: p.IdT) -> tuple[RequestInfo | None, ...]:
        """Each stock's ledger entry for ``id`` (``STOCK.REQUEST … DETAIL`` per key)."""
        return tuple(Stock(self.client, key).request(id) for key in self.keys)
