"""Typed results of the stock and lock commands (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CartPlaced",
    "CartResult",
    "CartSoldOut",
    "DeductResult",
    "Deducted",
    "Events",
    "LockStatus",
    "RequestInfo",
    "RequestState",
    "SoldOut",
    "StockInfo",
]

RequestState = Literal["deducted", "held", "confirmed", "refunded", "expired"]


@dataclass(frozen=True)
class Deducted:
    """The deduction holds (fresh, or a replay of its request id): ``remaining`` units are left.

    A replay looks exactly like a fresh deduction on the wire; ``Stock.request(id)`` tells what
    the request holds now.
    """

    remaining: int
    ok: Literal[True] = field(default=True, init=False, repr=False)


@dataclass(frozen=True)
class SoldOut:
    """Fewer units than asked were available (or the key does not exist): nothing changed."""

    ok: Literal[False] = field(default=False, init=False, repr=False)


DeductResult = Deducted | SoldOut


@dataclass(frozen=True)
class CartPlaced:
    """Every item deducted (or the whole cart replayed): what remains in each stock, in order."""

    remaining: tuple[int, ...]
    ok: Literal[True] = field(default=True, init=False, repr=False)


@dataclass(frozen=True)
class CartSoldOut:
    """Item ``index`` (from 1), stock ``key`` (as the cart names it), had too few units:
    nothing changed in any key."""

    index: int
    key: str | bytes
    ok: Literal[False] = field(default=False, init=False, repr=False)


CartResult = CartPlaced | CartSoldOut


@dataclass(frozen=True)
class RequestInfo:
    """What a stock's ledger knows of one request id (``STOCK.REQUEST … DETAIL``).

    ``quantity`` is what the deduction took (kept after a refund or an expiry); ``holds`` is what
    it holds now (``quantity``, or 0 when refunded or expired); ``deadline_ms`` (Unix ms) is set
    for a ``held`` entry only, ``buyer`` for an entry made with a buyer only.
    """

    state: RequestState
    quantity: int
    deadline_ms: int | None = None
    buyer: str | None = None

    @property
    def holds(self) -> int:
        return 0 if self.state in ("refunded", "expired") else self.quantity


@dataclass(frozen=True)
class StockInfo:
    """``STOCK.INFO``. On a plain integer-string stock only ``available`` is known (``plain``);
    the other counts are then 0. ``extra`` keeps fields a later module version may add."""

    available: int
    deducted: int = 0
    requests: int = 0
    fence: int = 0
    restocks: int = 0
    held: int = 0
    held_units: int = 0
    next_deadline_ms: int = 0
    limit: int = 0
    buyers: int = 0
    plain: bool = False
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class LockStatus:
    """``LOCK.STATUS`` of a held lock: ``ttl_ms`` milliseconds left (-1: no TTL)."""

    owner: str
    token: int
    ttl_ms: int
    waiters: int


@dataclass(frozen=True)
class Events:
    """Where a stock command appends its order events: ``EVENTS stream [MAXLEN [~] n]``."""

    stream: str
    maxlen: int | None = None
    approximate: bool = False
