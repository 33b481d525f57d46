"""Compare two quality-harness runs, without and with the sale calendar, split by sale phase.

    .venv/bin/python benchmarks/quality.py --sets a --out-json plain.json ...
    .venv/bin/python benchmarks/quality.py --sets a --calendar --out-json calendar.json ...
    .venv/bin/python benchmarks/calendar_compare.py plain.json calendar.json

Prints a markdown table: per data set and per phase (failures starting within 10 minutes
before to 30 minutes after an announced sale's start, an unannounced promotion's, or
neither), the failures warned of early and the false alerts fired in that phase, summed over
the held-out runs; for the model at its own operating point and at the threshold of its
held-out curve with the best early recall within 1 false alert per service-day (the "equal
false alerts" reading), and for the static baseline at the same budget (its figures do not
depend on the calendar: it is the same rule in both runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PHASES = {"announced_sale": "announced sales", "unannounced_promotion": "unannounced promotions",
          "quiet": "quiet hours"}
READINGS = (("model_operating", "model, own operating point"),
            ("model_at_1", "model at <= 1 false/day"), ("static_at_1", "static at <= 1 false/day"))


def sums(results: list[dict[str, Any]], reading: str) -> dict[str, tuple[int, int, int]]:
    out = {p: [0, 0, 0] for p in PHASES}
    for r in results:
        split = (r.get("phases") or {}).get(reading) or {}
        split = split.get("phases", split) if reading != "model_operating" else split
        for phase, figures in (split or {}).items():
            out[phase][0] += figures["events"]
            out[phase][1] += figures["early"]
            out[phase][2] += figures["false_alerts"]
    return {p: (a, b, c) for p, (a, b, c) in out.items()}


def cell(figures: tuple[int, int, int]) -> str:
    events, early, false = figures
    return f"{early}/{events} early, {false} false" if events else f"–, {false} false"


def main(argv: list[str]) -> int:
    plain, calendar = (json.loads(Path(p).read_text()) for p in argv[1:3])
    sets = sorted({r["set"] for r in plain["results"] if "error" not in r})
    print("| set | reading | phase | without calendar | with calendar |")
    print("| --- | --- | --- | --- | --- |")
    for name in sets:
        a = [r for r in plain["results"] if r.get("set") == name and "error" not in r]
        b = [r for r in calendar["results"] if r.get("set") == name and "error" not in r]
        for reading, title in READINGS:
            left, right = sums(a, reading), sums(b, reading)
            for phase, words in PHASES.items():
                print(f"| {name} | {title} | {words} | {cell(left[phase])} | {cell(right[phase])} |")
    for title, doc in (("without", plain), ("with", calendar)):
        for name in sets:
            runs = [r for r in doc["results"] if r.get("set") == name and "error" not in r]
            at1 = [r["at_equal_false_alerts"]["1.0"]["model"] for r in runs]
            own = [(r["model"]["early_recall"], r["model"]["false_alerts_per_service_day"])
                   for r in runs]
            print(f"\n{name} {title} calendar: model early recall at <= 1 false/day per run "
                  f"{at1}; at its operating point (early recall, false/day) {own}", end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
