"""What the sync and asyncio locks share: their arguments and their view of the lease (no
I/O)."""

from __future__ import annotations

import time
from collections.abc import Callable

from . import _protocol as p
from .errors import CommandError, LockLost, LockNotAcquired, WrongType

OnLost = Callable[[LockLost], None]


class LockBase:
    """The arguments of a lock, checked, and what it knows of its grant."""

    def __init__(
        self,
        client: object,
        key: p.KeyT,
        owner: str | None,
        ttl: float,
        wait: float | None,
        watchdog: int,
        watchdog_interval: float | None,
        io_timeout: float,
        on_lost: OnLost | None,
    ) -> None:
        p.refuse_pipeline(client)
        self.key = key
        self.owner = p.default_owner() if owner is None else owner
        self._owner_given = owner is not None
        if not self.owner:
            raise ValueError("owner must not be empty")
        self._ttl_ms = p.seconds_to_ms(ttl, "ttl")
        self.ttl = float(ttl)
        self.wait = wait
        self._wait_ms = p.wait_to_ms(wait)
        if isinstance(watchdog, bool) or not isinstance(watchdog, int) or watchdog < 0:
            raise ValueError("watchdog must be a number of renewals (an int of 0 or more)")
        self.watchdog = watchdog
        self.watchdog_interval = (
            self.ttl / 3 if watchdog_interval is None else float(watchdog_interval)
        )
        if watchdog and self.watchdog_interval >= self.ttl:
            raise ValueError("watchdog_interval must be shorter than ttl")
        p.seconds_to_ms(self.watchdog_interval, "watchdog_interval")
        p.seconds_to_ms(io_timeout, "io_timeout")
        self.io_timeout = float(io_timeout)
        self.on_lost = on_lost
        self._token: int | None = None
        self._lost: LockLost | None = None
        self._lease_end = 0.0  # time.monotonic() when the lease ends, as far as we know

    @property
    def token(self) -> int | None:
        """The fencing token of the grant held (kept once the grant is found lost, until
        ``release()`` or the end of the ``with`` block; ``LockLost.token`` keeps it after)."""
        return self._token

    @property
    def lost(self) -> bool:
        """The grant held was found lost (expired, or in other hands)."""
        return self._lost is not None

    @property
    def lost_reason(self) -> str | None:
        return None if self._lost is None else self._lost.reason

    @property
    def held(self) -> bool:
        """We hold a grant and have not seen it lost (the lease may still end meanwhile)."""
        return self._token is not None and self._lost is None

    def check(self) -> int:
        """The token, or ``LockLost`` when the lock is known lost or its lease has run out."""
        if self._token is None:
            raise LockNotAcquired(f"lock {self.key!r} is not held")
        if self._lost is None and time.monotonic() >= self._lease_end:
            self._mark_lost(self._token, "the lease ran out without a renewal")
        if self._lost is not None:
            raise self._lost
        return self._token

    def _held_token(self) -> int:
        token = self._token
        if token is None:
            raise LockNotAcquired(f"lock {self.key!r} is not held by this handle")
        return token

    def _mark_lost(self, token: int, reason: str) -> LockLost:
        raise NotImplementedError

    def _owner_after_failed_clean_up(self) -> str:
        """The owner whose grant a failed clean-up may have left (its release goes on in the
        background); a default owner is replaced by a new one, so that release can never
        touch a later grant of this object."""
        old = self.owner
        if not self._owner_given:
            self.owner = p.default_owner()
        return old


def ends_the_grant(err: Exception) -> bool:
    """A renewal's error reply that says the grant is over for us (the key holds another type,
    or the call itself is refused: an ``ERR``), as against a server that cannot answer now
    (``BUSY``, ``LOADING``, ``READONLY``, ``CLUSTERDOWN``, ``TRYAGAIN``, ``MISCONF``, ...)."""
    return isinstance(err, WrongType) or (isinstance(err, CommandError) and err.code == "ERR")
