"""The exception family.

Every exception of this package derives from :class:`FenceError`, itself a
``redis.exceptions.RedisError``, so ``except redis.RedisError`` still catches everything.
An error reply of the module becomes a :class:`CommandError` (also a
``redis.exceptions.ResponseError``), or one of its subclasses when the reply's code says more:
the numbers in the message are parsed into attributes, so nobody parses strings.
"""

from __future__ import annotations

import re

from redis import exceptions as _rx

__all__ = [
    "AlreadyRefunded",
    "BuyerRequired",
    "CommandError",
    "FenceError",
    "HoldExpired",
    "LedgerFull",
    "LimitExceeded",
    "LockLost",
    "LockInUse",
    "LockNotAcquired",
    "NoSuchStock",
    "PartialCart",
    "StaleToken",
    "Unblocked",
    "WrongType",
    "map_error",
]


class FenceError(_rx.RedisError):
    """The root of every exception this package raises."""


class CommandError(FenceError, _rx.ResponseError):
    """An error reply of the module.

    ``code`` is the reply's first word as the server sent it (``ERR``, ``WRONGTYPE``,
    ``STALE``, ``LIMIT``, ``EXPIRED``, ``REFUNDED``, ``NOKEY``, ``LEDGERFULL``, ``UNBLOCKED``,
    ...), ``message`` the whole reply.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WrongType(CommandError):
    """The key holds another type (a lock where a stock is expected, a list, ...)."""


class StaleToken(CommandError):
    """A ``FENCE`` token below the highest the stock accepted: a newer lock holder exists.

    ``token`` and ``highest`` are set for ``STOCK.DEDUCT``; ``index`` (from 1) and ``key`` for a
    cart item.
    """

    def __init__(
        self,
        message: str,
        token: int | None = None,
        highest: int | None = None,
        index: int | None = None,
        key: str | bytes | None = None,
    ) -> None:
        super().__init__("STALE", message)
        self.token = token
        self.highest = highest
        self.index = index
        self.key = key


class LimitExceeded(CommandError):
    """The buyer would pass the stock's limit per buyer.

    ``buyer``, ``holds`` (what the buyer holds now) and ``limit`` are set for
    ``STOCK.DEDUCT``; ``index`` and ``key`` for a cart item. ``buyer`` is the id as the server
    shows it (bytes that are not printable ASCII as ``\\xNN``, cut after 64 bytes).
    """

    def __init__(
        self,
        message: str,
        buyer: str | None = None,
        holds: int | None = None,
        limit: int | None = None,
        index: int | None = None,
        key: str | bytes | None = None,
    ) -> None:
        super().__init__("LIMIT", message)
        self.buyer = buyer
        self.holds = holds
        self.limit = limit
        self.index = index
        self.key = key


class BuyerRequired(CommandError):
    """The stock limits each buyer (``limit`` units): the deduction needs a ``buyer``."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__("ERR", message)
        self.limit = limit


class HoldExpired(CommandError):
    """``confirm`` of a hold whose deadline (``deadline_ms``, Unix ms) passed first."""

    def __init__(self, message: str, request_id: str, deadline_ms: int) -> None:
        super().__init__("EXPIRED", message)
        self.request_id = request_id
        self.deadline_ms = deadline_ms


class AlreadyRefunded(CommandError):
    """``confirm`` of a request that was refunded."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__("REFUNDED", message)
        self.request_id = request_id


class LedgerFull(CommandError):
    """The stock's request ledger (or restock ledger) holds ``fence.max-ledger-entries`` ids.

    ``index`` and ``key`` are set for a cart item.
    """

    def __init__(
        self, code: str, message: str, index: int | None = None, key: str | bytes | None = None
    ) -> None:
        super().__init__(code, message)
        self.index = index
        self.key = key


class NoSuchStock(CommandError):
    """A cart item's stock does not exist (``index`` from 1, ``key``)."""

    def __init__(self, message: str, index: int, key: str | bytes) -> None:
        super().__init__("NOKEY", message)
        self.index = index
        self.key = key


class PartialCart(CommandError):
    """A cart's request id is in the ledger of some of its stocks only.

    ``index`` and ``key`` name the first item whose stock has it.
    """

    def __init__(self, message: str, request_id: str, index: int, key: str | bytes) -> None:
        super().__init__("ERR", message)
        self.request_id = request_id
        self.index = index
        self.key = key


class Unblocked(CommandError):
    """A waiting ``LOCK.ACQUIRE … WAIT`` ended because its server stopped being a master (a
    failover, ``UNBLOCKED``), or its slot moved away (``TRYAGAIN``). Acquire again once the
    client reaches the key's master."""


class LockNotAcquired(FenceError, _rx.LockError):
    """``with lock:`` could not take the lock (held by another owner, or the wait ran out)."""


class LockInUse(FenceError, _rx.LockError):
    """This ``Lock`` object holds its lock, or another thread or task is acquiring with it:
    one ``Lock`` object per holder (its owner is one holder to the server)."""

    def __init__(self, key: object) -> None:
        super().__init__(
            f"this Lock object for {key!r} is held or being acquired: make one Lock per holder"
        )


class LockLost(FenceError, _rx.LockNotOwnedError):
    """The lock expired or changed hands while we believed we held it.

    Work done under it may have overlapped another holder's; the token (``token``) is the one
    that was lost. ``reason`` says how it was noticed.
    """

    def __init__(self, key: str, token: int | None, reason: str) -> None:
        super().__init__(f"lock {key!r} (token {token}) was lost: {reason}")
        self.key = key
        self.token = token
        self.reason = reason


_STALE_ONE = re.compile(r"^STALE fencing token (\d+) is below the highest accepted token (\d+)$")
_LIMIT_ONE = re.compile(r"^LIMIT buyer (.*) has (\d+) of at most (\d+)$", re.S)
_CART_ITEM = re.compile(r"^(NOKEY|STALE|LEDGERFULL|LIMIT|SOLDOUT) (\d+) (.*)$", re.S)
_EXPIRED = re.compile(r"^EXPIRED request (.*) expired at (\d+)$", re.S)
_REFUNDED = re.compile(r"^REFUNDED request (.*) was refunded$", re.S)
_PARTIAL = re.compile(
    r"^request (.*) is in the ledger of some of the cart's stocks only "
    r"\(item (\d+) (.*) has it\)$",
    re.S,
)
_BUYER_REQUIRED = re.compile(r"^this stock limits each buyer to (\d+) units")


def cart_item_refusal(message: str) -> tuple[str, int, str] | None:
    """``(code, index, key)`` of a cart refusal ``<CODE> <index> <key>``, else None."""
    m = _CART_ITEM.match(message)
    if m is None:
        return None
    return m.group(1), int(m.group(2)), m.group(3)


def map_error(error: _rx.ResponseError) -> Exception:
    """The exception of this family for one error reply (redis-py's ``ResponseError``).

    redis-py strips the ``ERR`` code from the messages it sees (``str(error)`` is then the rest)
    and keeps every other code of this module in the message. Errors of redis-py's own classes
    for other codes (``MOVED``, ``READONLY``, ``TRYAGAIN``, ``OOM``, ...) are returned as they are.
    """
    if isinstance(error, FenceError):
        return error
    if type(error) is not _rx.ResponseError:
        return error
    text = str(error)
    first, _, _rest = text.partition(" ")
    if first == "STALE":
        m = _STALE_ONE.match(text)
        if m:
            return StaleToken(text, token=int(m.group(1)), highest=int(m.group(2)))
        item = cart_item_refusal(text)
        if item:
            return StaleToken(text, index=item[1], key=item[2])
        return StaleToken(text)
    if first == "LIMIT":
        m = _LIMIT_ONE.match(text)
        if m:
            return LimitExceeded(
                text, buyer=m.group(1), holds=int(m.group(2)), limit=int(m.group(3))
            )
        item = cart_item_refusal(text)
        if item:
            return LimitExceeded(text, index=item[1], key=item[2])
        return LimitExceeded(text)
    if first == "NOKEY":
        item = cart_item_refusal(text)
        if item:
            return NoSuchStock(text, item[1], item[2])
    if first == "LEDGERFULL":
        item = cart_item_refusal(text)
        if item:
            return LedgerFull("LEDGERFULL", text, item[1], item[2])
    if first == "EXPIRED":
        m = _EXPIRED.match(text)
        if m:
            return HoldExpired(text, m.group(1), int(m.group(2)))
    if first == "REFUNDED":
        m = _REFUNDED.match(text)
        if m:
            return AlreadyRefunded(text, m.group(1))
    if first == "WRONGTYPE":
        return WrongType("WRONGTYPE", text)
    if first == "UNBLOCKED":
        return Unblocked("UNBLOCKED", text)
    if not _is_err(error, first):
        # A code of the server's own (NOREPLICAS, MISCONF, BUSY, ...): kept as sent.
        return CommandError(first, text)
    # An ERR reply: redis-py took the code off.
    m = _PARTIAL.match(text)
    if m:
        return PartialCart("ERR " + text, m.group(1), int(m.group(2)), m.group(3))
    m = _BUYER_REQUIRED.match(text)
    if m:
        return BuyerRequired("ERR " + text, int(m.group(1)))
    if text.startswith("request ledger is full") or text.startswith("restock ledger is full"):
        return LedgerFull("ERR", "ERR " + text)
    return CommandError("ERR", "ERR " + text)


_MISSING = object()

# Error codes a server may send that redis-py keeps in the message (for a redis-py without
# ``status_code``, which cannot tell "ERR HOLD needs ID" from a code of its own).
_SERVER_CODES = frozenset(
    {
        "SOLDOUT",
        "NOKEY",
        "LEDGERFULL",
        "EXPIRED",
        "REFUNDED",
        "NOREPLICAS",
        "MISCONF",
        "BUSY",
        "NOTBUSY",
        "BUSYKEY",
        "UNKILLABLE",
        "NOPROTO",
        "NOGOODSLAVE",
        "NOTREADY",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "CROSSSLOT",
        "TRYAGAIN",
        "LOADING",
        "OOM",
        "READONLY",
    }
)


def _is_err(error: _rx.ResponseError, first: str) -> bool:
    """Whether redis-py took an ``ERR`` code off this reply. redis-py 8 says so in
    ``status_code``; an older one strips ``ERR`` and keeps every other code in the message."""
    status = getattr(error, "status_code", _MISSING)
    if status is not _MISSING:
        return status == "ERR"
    return first not in _SERVER_CODES
