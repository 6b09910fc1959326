"""The asyncio API, on ``redis.asyncio``: the same classes, with coroutines.

    import redis.asyncio as redis
    from redis_fence.asyncio import Lock, Stock

    r = redis.Redis()
    async with Lock(r, "{sku:42}:lock", ttl=10, wait=5) as token:
        result = await Stock(r, "{sku:42}").deduct(1, id="order-1001", fence=token)

Results and exceptions are those of ``redis_fence``.
"""

from ._lock import Lock
from ._stock import Cart, Stock

__all__ = ["Cart", "Lock", "Stock"]
