"""The one retry policy: exponential backoff with full jitter and a cap.

Every caller that retries goes through :class:`RetryPolicy`, so the delays an operator
configures (``retry_initial``, ``retry_max``) are the delays gnosync uses everywhere.
A server's ``Retry-After`` stretches the next delay; it never shortens it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
)

from gnosync.errors import GnosyncError

T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, GnosyncError) and exc.retryable


@dataclass(frozen=True)
class RetryPolicy:
    initial: float = 0.2
    maximum: float = 5.0
    multiplier: float = 2.0
    attempts: int | None = None  # None: retry until stopped

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        # Jitter in [ceiling/2, ceiling]: spreads out clients without ever retrying at once.
        delay = ceiling / 2 + random.random() * ceiling / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.maximum * 4))
        return delay

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[BaseException, int, float], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Run ``fn`` until it succeeds, a non-retryable error escapes, or attempts run out.

        ``on_retry(error, attempt, delay)`` runs before each wait; ``sleep`` lets the
        caller make waits interruptible.
        """

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.delay(state.attempt_number, getattr(exc, "retry_after", None))

        async def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None:
                delay = state.next_action.sleep if state.next_action else 0.0
                await on_retry(state.outcome.exception(), state.attempt_number, delay)

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            wait=wait,
            stop=stop_never if self.attempts is None else stop_after_attempt(self.attempts),
            before_sleep=before_sleep,
            sleep=sleep,
            reraise=True,
        )
        async def attempt() -> T:
            # A named coroutine function: tenacity treats other callables as synchronous.
            return await fn()

        return await retrying(attempt)
