"""`retrain.schedule`: validated once at load (`parse_schedule`), then APScheduler 3.x triggers.

    >>> trigger_for("interval 6h")            # every 6 hours from start-up
    IntervalTrigger(interval=datetime.timedelta(seconds=21600), ...)
    >>> trigger_for("30 */6 * * *")           # cron: minute hour day month weekday, in UTC
    CronTrigger(minute='30', hour='*/6', ...)

Cron fields are read in UTC, not the host's zone: replicas in several regions (and a host
whose zone changes) then agree on when a run happens.
"""

from __future__ import annotations

from typing import Any

from sentinel.config.readers import parse_duration
from sentinel.errors import ConfigError

INTERVAL_PREFIX = "interval"


def trigger_for(schedule: str) -> Any:
    """An APScheduler trigger; ValueError (or ConfigError for a bad duration) when invalid."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    text = schedule.strip()
    if text.startswith(INTERVAL_PREFIX):
        seconds = parse_duration(text[len(INTERVAL_PREFIX):].strip(), "retrain.schedule")
        return IntervalTrigger(seconds=seconds, timezone="UTC")
    if len(text.split()) != 5:
        raise ValueError(f"a cron string has 5 fields, got {len(text.split())}")
    return CronTrigger.from_crontab(text, timezone="UTC")


def interval_seconds(schedule: str) -> float | None:
    """The period of an 'interval' schedule; None for cron."""
    text = schedule.strip()
    if not text.startswith(INTERVAL_PREFIX):
        return None
    return parse_duration(text[len(INTERVAL_PREFIX):].strip(), "retrain.schedule")


def parse_schedule(value: object, key: str = "retrain.schedule") -> str:
    """'interval <duration>' or a 5-field cron expression; validated by building the trigger."""
    expected = "'interval <duration>' (e.g. 'interval 6h') or a 5-field cron string such as " \
               "'0 */6 * * *' (UTC)"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, expected)
    try:
        trigger_for(value)
    except (ValueError, ConfigError) as exc:
        detail = f"the interval must be {exc.expected}" if isinstance(exc, ConfigError) else exc
        raise ConfigError(key, value, f"{expected} ({detail})") from exc
    return value.strip()
