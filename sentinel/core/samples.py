"""Decoding the sample contract into typed Samples or typed Rejections.

    >>> decode(b'{"service": "cart", "ts": 1763899200, "metrics": {"qps": 12.5}}')
    Sample(service='cart', ts=1763899200.0, metrics={'qps': 12.5}, gaps=())

A metric whose value is missing, non-numeric or non-finite is a *gap*, not a reason to
throw the sample away; a sample with no usable metric at all is rejected. Decoding never
raises: everything that is wrong with a message becomes a Rejection whose `reason` is one of
REASONS (a bounded set, so it can be a Prometheus label).

One decode for every path: the daemon decodes Kafka values (bytes) and the backtest,
training and retraining decode file lines as bytes too, through this function, so a line
is accepted or rejected, with the same reason, wherever it is read. Only the reference
time of the ``future_ts`` rule differs: the daemon's wall clock, a replay's ReplayClock.

A service name (`service_problem`) is 1..MAX_SERVICE_CHARS characters of valid UTF-8 (no
lone surrogate, which a JSON ``\\ud800`` escape can smuggle in), with no control, format,
private-use or line/paragraph-separator character and not only whitespace: it becomes a
Prometheus label, a CSV cell, a log field and an HTTP header, and each of those must be
writable for every accepted name.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SERVICE_CHARS = 200
MAX_METRICS = 256
MIN_TS = 946_684_800.0  # 2000-01-01: anything earlier is a unit mistake (ms vs s) or junk
MAX_TS = 4_102_444_800.0  # 2100-01-01
MAX_NUMBER_DIGITS = 400  # a longer JSON integer is beyond any float: parsed as inf, not int
# Unicode categories a service name may not contain: control, format (bidi overrides,
# zero-width), surrogate, private use, line and paragraph separators.
BANNED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})

REASONS = (
    "too_large",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "invalid_service",
    "invalid_ts",
    "ts_out_of_range",
    "future_ts",
    "invalid_metrics",
    "no_valid_metrics",
)


@dataclass(frozen=True, slots=True)
class Sample:
    service: str
    ts: float
    metrics: Mapping[str, float]
    gaps: tuple[str, ...] = ()  # metric names present in the message but unusable


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # one of REASONS
    detail: str


def decode(raw: bytes | str, now: float | None = None, max_future_seconds: float = 300.0
           ) -> Sample | Rejection:
    """Decode one message. With `now` given, a ts more than `max_future_seconds` ahead of it
    is rejected as ``future_ts`` (a wrong clock must not drag the watermark forward); that
    rule comes last, so ``decode(raw, now)`` is ``admit(decode(raw), now)``."""
    decoded = _decode(raw)
    return decoded if now is None else admit(decoded, now, max_future_seconds)


def admit(decoded: Sample | Rejection, now: float, max_future_seconds: float
          ) -> Sample | Rejection:
    """The ``future_ts`` rule alone: `decoded` unless it is a Sample too far ahead of `now`."""
    if isinstance(decoded, Sample) and decoded.ts > now + max_future_seconds:
        return Rejection("future_ts", f"ts {decoded.ts:.0f} is {decoded.ts - now:.0f}s ahead of "
                                      f"now ({now:.0f}; at most {max_future_seconds:.0f}s allowed)")
    return decoded


def _decode(raw: bytes | str) -> Sample | Rejection:
    # The limit is on bytes: a JSONL line (str) must hit it where the Kafka message would.
    size = (len(raw) if isinstance(raw, bytes) or raw.isascii()
            else len(raw.encode(errors="surrogatepass")))
    if size > MAX_MESSAGE_BYTES:
        return Rejection("too_large", f"{size} bytes > {MAX_MESSAGE_BYTES}")
    if isinstance(raw, bytes):
        try:  # strictly: json.loads(bytes) would let encoded surrogates through
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection("malformed_json", f"not valid UTF-8: {exc.reason} at byte {exc.start}")
    try:
        doc = json.loads(raw.removeprefix("\ufeff"), parse_int=_parse_int)
    except (ValueError, RecursionError) as exc:
        return Rejection("malformed_json", str(exc)[:200])
    if not isinstance(doc, dict):
        return Rejection("not_an_object", f"top level is {type(doc).__name__}")
    for name in ("service", "ts", "metrics"):
        if name not in doc:
            return Rejection("missing_field", f"no '{name}'")
    service = doc["service"]
    problem = service_problem(service)
    if problem is not None:
        return Rejection("invalid_service", problem)
    raw_ts = doc["ts"]
    ts = parse_ts(raw_ts)
    if ts is None:
        if _is_huge_number(raw_ts):
            return Rejection("ts_out_of_range", f"ts is a number beyond any date "
                                                f"({_number_words(raw_ts)}), outside "
                                                f"[{MIN_TS:.0f}, {MAX_TS:.0f}]")
        return Rejection("invalid_ts", f"ts {_short(raw_ts)}: expected Unix seconds or an "
                                       f"RFC 3339 string with a time zone")
    if not MIN_TS <= ts <= MAX_TS:
        return Rejection("ts_out_of_range", f"ts {ts} outside [{MIN_TS:.0f}, {MAX_TS:.0f}]")
    raw_metrics = doc["metrics"]
    if not isinstance(raw_metrics, dict) or len(raw_metrics) > MAX_METRICS:
        return Rejection("invalid_metrics", f"metrics {_short(raw_metrics)}")
    metrics: dict[str, float] = {}
    gaps: list[str] = []
    for name, value in raw_metrics.items():
        if not _encodable(name):
            continue  # a name no config can track; it must not reach a log or a label
        number = _finite(value)
        if number is None:
            gaps.append(name)
        else:
            metrics[name] = number
    if not metrics:
        return Rejection("no_valid_metrics",
                         f"no finite metric value in {_short(sorted(raw_metrics)[:5])}")
    return Sample(service, ts, metrics, tuple(gaps))


def service_problem(service: object) -> str | None:
    """Why `service` is not a valid service name, or None (the rules: module docstring)."""
    if not isinstance(service, str):
        kind = "int" if isinstance(service, _HugeInt) else type(service).__name__
        return f"service must be a string, got {kind} {_short(service)}"
    if not service.strip():
        return f"service {_short(service)} is empty or blank"
    if len(service) > MAX_SERVICE_CHARS:
        return f"service is {len(service)} characters long, at most {MAX_SERVICE_CHARS} allowed"
    for i, char in enumerate(service):
        category = unicodedata.category(char)
        if category in BANNED_CATEGORIES:
            what = "a lone surrogate (not valid UTF-8)" if category == "Cs" else "a control character"
            return f"service {_short(service)} has {what} U+{ord(char):04X} at position {i}"
    return None


class ReplayClock:
    """The ``future_ts`` reference of a replayed file, taken from the data: a file has no wall clock.

        >>> clock = ReplayClock(max_future_seconds=300)
        >>> list(clock.admit_all(decoded_items))     # Sample | Rejection, in file order

    `now` for a sample is the larger of the watermark (the latest ts accepted so far) and the
    (lower) median ts of itself and the next AHEAD decoded samples (at the end of the file,
    where none follows: of itself and the BEHIND samples before it). The median ignores a
    lone far-future line (rejected ``future_ts``, as the daemon, whose wall clock knows
    better, would) and a lone ancient first line (accepted: it is behind, not ahead), while a
    stream that really resumes after a silence carries the median with it: what follows the
    jump stays there. Only a sample more than `max_future_seconds` past the watermark is
    looked at this way, so the cost is paid by jumps, not by every line.
    """

    AHEAD = 64
    BEHIND = 32

    def __init__(self, max_future_seconds: float) -> None:
        self.max_future_seconds = max_future_seconds
        self.watermark = -math.inf
        self._behind: deque[float] = deque(maxlen=self.BEHIND)

    def admit_all(self, items: Iterable[Sample | Rejection]) -> Iterator[Sample | Rejection]:
        ahead: deque[Sample | Rejection] = deque()
        source = iter(items)
        for item in source:
            ahead.append(item)
            if len(ahead) >= self.AHEAD:
                break
        while ahead:
            yield self._admit(ahead.popleft(), ahead)
            for item in source:
                ahead.append(item)
                break

    def _admit(self, item: Sample | Rejection, ahead: deque[Sample | Rejection]
               ) -> Sample | Rejection:
        if not isinstance(item, Sample):
            return item
        decided: Sample | Rejection = item
        if item.ts > self.watermark + self.max_future_seconds:  # the rare case: look around
            later = [x.ts for x in ahead if isinstance(x, Sample)]
            ts = sorted([item.ts, *(later or self._behind)])
            decided = admit(item, max(self.watermark, ts[(len(ts) - 1) // 2]),
                            self.max_future_seconds)
        self._behind.append(item.ts)
        if isinstance(decided, Sample):
            self.watermark = max(self.watermark, decided.ts)
        return decided


def parse_ts(value: object) -> float | None:
    """Unix seconds (int/float) or an RFC 3339 string with a time zone; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _finite(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:  # RFC 3339 requires an offset; guessing one shifts alerts
            return None
        return parsed.timestamp()
    return None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # JSON integers are unbounded: 1 followed by 400 zeros is valid
        return None
    return number if math.isfinite(number) else None


class _HugeInt(float):
    """A JSON integer of more than MAX_NUMBER_DIGITS digits: +-inf, remembering its length."""

    digits: int


def _parse_int(text: str) -> int | float:
    # Python refuses int() of more than 4,300 digits (a ValueError that would read as
    # malformed JSON); no such number is a usable ts or metric value, so it becomes inf.
    if len(text) <= MAX_NUMBER_DIGITS:
        return int(text)
    huge = _HugeInt("-inf" if text.startswith("-") else "inf")
    huge.digits = len(text.lstrip("-"))
    return huge


def _is_huge_number(value: object) -> bool:
    return isinstance(value, _HugeInt) or (isinstance(value, int) and not isinstance(value, bool))


def _number_words(value: object) -> str:
    if isinstance(value, _HugeInt):
        return f"an integer of {value.digits} digits"
    return f"an integer of {len(str(abs(value)))} digits"  # type: ignore[arg-type]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(value: object, limit: int = 80) -> str:
    """A value for a message: ASCII-escaped (safe in logs and headers) and at most `limit` chars."""
    text = ascii(value) if isinstance(value, str) else ascii(_truncated_repr(value, limit))[1:-1]
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def _truncated_repr(value: object, limit: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
        return f"<integer of about {int(value.bit_length() * 0.30103)} digits>"
    text = repr(value)
    return text[: limit + 1]


def encode(sample: Sample) -> str:
    """The contract's JSON line for a Sample (gaps are not written)."""
    return json.dumps({"service": sample.service, "ts": sample.ts, "metrics": dict(sample.metrics)},
                      separators=(",", ":"))
