"""redis-fence for Python: locks with fencing tokens and idempotent stock, on redis-py.

    import redis
    from redis_fence import Lock, Stock, SoldOut

    r = redis.Redis()
    with Lock(r, "{sku:42}:lock", ttl=10, wait=5) as token:
        result = Stock(r, "{sku:42}").deduct(1, id="order-1001", fence=token)

The asyncio twin of everything is in ``redis_fence.asyncio``.
"""

from .errors import (
    AlreadyRefunded,
    BuyerRequired,
    CommandError,
    FenceError,
    HoldExpired,
    LedgerFull,
    LimitExceeded,
    LockInUse,
    LockLost,
    LockNotAcquired,
    NoSuchStock,
    PartialCart,
    StaleToken,
    Unblocked,
    WrongType,
)
from .lock import Lock
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
from .stock import Cart, Stock

__version__ = "0.1.0"

__all__ = [
    "AlreadyRefunded",
    "BuyerRequired",
    "Cart",
    "CartPlaced",
    "CartResult",
    "CartSoldOut",
    "CommandError",
    "DeductResult",
    "Deducted",
    "Events",
    "FenceError",
    "HoldExpired",
    "LedgerFull",
    "LimitExceeded",
    "Lock",
    "LockInUse",
    "LockLost",
    "LockNotAcquired",
    "LockStatus",
    "NoSuchStock",
    "PartialCart",
    "RequestInfo",
    "RequestState",
    "SoldOut",
    "StaleToken",
    "Stock",
    "StockInfo",
    "Unblocked",
    "WrongType",
]
