"""When to retry an alert delivery, and how long to wait first. Pure functions.

    >>> classify(503), classify(404)
    ('retried', 'rejected')
    >>> backoff_seconds(3, DeliveryConfig(initial_backoff_seconds=1.0), random=lambda: 1.0)
    4.0

Retry policy, per delivery:
- 2xx: delivered. 408, 429, 5xx or no response (refused, reset, timed out): retried.
  Any other status (3xx, 4xx): rejected and removed; sending it again cannot help.
- Retry n waits a uniform random time in [0, min(max_backoff, initial_backoff * 2^(n-1))]
  ("full jitter", so that senders do not stampede a receiver coming back), and at least the
  Retry-After (seconds or HTTP date) of a 429 or 503.
- No attempt limit: a delivery is retried until it is `max_age` old (wall clock since it was
  queued, so it counts across restarts), then removed as expired. Age, not attempts, because
  an alert's worth is its freshness, and the attempt count would restart with the process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal

from sentinel.config.schema import DeliveryConfig

Outcome = Literal["delivered", "retried", "rejected"]


def backoff_seconds(failures: int, config: DeliveryConfig, random: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(max_backoff, initial_backoff * 2^(failures-1))]."""
    bound = config.initial_backoff_seconds * 2.0 ** min(max(failures - 1, 0), 60)
    return random() * min(config.max_backoff_seconds, bound)


def classify(status: int | None) -> Outcome:
    """`None` means no HTTP response came back."""
    if status is not None and 200 <= status < 300:
        return "delivered"
    if status is None or status in (408, 429) or status >= 500:
        return "retried"
    return "rejected"


def retry_after_seconds(headers: Mapping[str, str], now_ts: float) -> float | None:
    """The Retry-After header (delta-seconds or an HTTP date) as seconds from `now_ts`."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates come back naive; HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_ts)
