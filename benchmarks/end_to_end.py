"""End to end from a real broker: samples/s through `sentinel run`, and its consumer lag over time.

    python benchmarks/end_to_end.py --services 10000 [--measure-steps 20] [--window 10m]
                                    [--rate 0] [--profile 20]

A tansu broker on loopback gets a topic of `--partitions` partitions; one sample per service
and 10 s step (keyed by service) is produced into it: enough steps to fill every window, then
`--measure-steps` more, each of which closes one bucket and scores one window per service.
Then `python -m sentinel run` (the shipped config; changes in kit.write_config) consumes it
all: decode, buckets, windows, scoring, metrics, history store, commits. Its /metrics is
scraped every `--scrape-every` seconds (default 5; Prometheus typically scrapes every 15 s, and
each scrape renders one risk series per service in the daemon's process; `scrape_s` is how
long one took): samples counted, consumer lag, windows scored, RSS.

- `--rate 0` (default): everything is produced before the daemon starts, which then replays
  it as fast as it can. Reported: samples/s while windows fill (no scoring yet) and while
  every sample closes a window (the steady state of a live stream).
- `--rate R`: the windows are pre-filled the same way, then the `--measure-steps` are
  produced live at R samples/s (a separate process) while the daemon consumes: lag over time
  says whether it keeps up.
- `--profile S`: py-spy samples the daemon for S seconds of the scoring phase and the
  functions where its main thread spends the time are printed.

Prints a line per scrape, then the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from kit import (
    STEP_SECONDS,
    dump,
    produce,
    produce_parallel,
    rss_bytes,
    scrape,
    start_daemon,
    tf_loaded,
    write_config,
    write_model,
)

from sentinel.config.load import load_config
from sentinel.sim.localbroker import TansuBroker

TOPIC = "sentinel.metrics"


def profile(pid: int, seconds: int, out: Path) -> list[tuple[str, float]]:
    """py-spy for `seconds`: the share of samples per function at the top of the stack."""
    py_spy = Path(sys.executable).with_name("py-spy")
    subprocess.run([str(py_spy), "record", "-p", str(pid), "-d", str(seconds), "-r", "50",
                    "--format", "raw", "-o", str(out), "--nonblocking"],
                   check=True, capture_output=True)
    own: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if "MainThread" not in frames[0] and "main" not in frames[0].lower():
            continue  # the notifier's and HTTP server's threads: mostly asleep
        total += int(count)
        own[frames[-1]] += int(count)
    return [(frame, round(n / max(total, 1), 3)) for frame, n in own.most_common(25)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--measure-steps", type=int, default=20,
                        help="steps after the windows are full (one scored window each)")
    parser.add_argument("--window", default=None, help="override config window (e.g. 5m)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=float, default=0.0, help="live samples/s (0: replay)")
    parser.add_argument("--profile", type=int, default=0, help="py-spy seconds (0: none)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--scrape-every", type=float, default=5.0,
                        help="seconds between scrapes of /metrics (each costs the daemon CPU: "
                             "one series per service)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sentinel-e2e-"))
    figures: dict = {"services": args.services, "partitions": args.partitions, "rate": args.rate,
                     "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    with TansuBroker(log_dir=work) as broker:
        broker.create_topic(TOPIC, partitions=args.partitions)
        cfg_path, metrics_url = write_config(
            work / "config.yaml", bootstrap=broker.bootstrap, topic=TOPIC,
            model_dir=work / "model", state_dir=work / "state", services=args.services,
            window=args.window)
        config = load_config(cfg_path)
        write_model(work / "model", cfg_path)
        # windows fill after window_steps buckets; the lateness holds back the newest buckets
        fill_steps = config.window_steps + int(config.stream.allowed_lateness_seconds
                                               // STEP_SECONDS) + 1
        total_steps = fill_steps + args.measure_steps
        start_ts = int(time.time()) // STEP_SECONDS * STEP_SECONDS - STEP_SECONDS * (total_steps + 60)
        started = time.monotonic()
        pre_steps = fill_steps if args.rate else total_steps
        produced = produce_parallel(broker.bootstrap, TOPIC, args.services, pre_steps, start_ts)
        figures["produce"] = {"samples": produced,
                              "samples_per_s": round(produced / (time.monotonic() - started))}
        print(f"produced {produced:,} samples in {time.monotonic() - started:.1f}s", flush=True)
        total = args.services * total_steps
        fill_samples = args.services * fill_steps
        live = None
        daemon = start_daemon(cfg_path, work / "daemon.log")
        timeline: list[dict] = []
        profiled: list = []
        profiler: threading.Thread | None = None
        try:
            began = time.monotonic()
            while time.monotonic() - began < args.timeout:
                time.sleep(args.scrape_every)
                if daemon.poll() is not None:
                    raise SystemExit(f"daemon exited {daemon.returncode}: "
                                     + (work / "daemon.log").read_text()[-3000:])
                scrape_started = time.monotonic()
                try:
                    m = scrape(metrics_url)
                except OSError:
                    continue
                row = {"t": round(time.monotonic() - began, 1),
                       "scrape_s": round(time.monotonic() - scrape_started, 2),
                       "samples": int(m.get("sentinel_samples_total", 0)),
                       "lag": int(m.get("sentinel_consumer_lag", 0)),
                       "scored": int(m.get("sentinel_scoring_batch_size_sum", 0)),
                       "polls": int(m.get("sentinel_scoring_latency_seconds_count", 0)),
                       "rss_mb": round(rss_bytes(daemon.pid) / 2**20, 1)}
                timeline.append(row)
                print(row, flush=True)
                if args.rate and live is None and row["samples"] >= fill_samples:
                    live = multiprocessing.get_context("spawn").Process(
                        target=produce, args=(broker.bootstrap, TOPIC, range(args.services), fill_steps,
                                              args.measure_steps, start_ts, args.rate))
                    live.start()
                    figures["live_started_t"] = row["t"]
                if args.profile and profiler is None and row["samples"] >= fill_samples:
                    profiler = threading.Thread(target=lambda: profiled.extend(
                        profile(daemon.pid, args.profile, work / "profile.txt")))
                    profiler.start()
                if row["samples"] >= total:
                    break
            figures["tensorflow_loaded_in_daemon"] = tf_loaded(daemon.pid)
            figures["rss_mb_end"] = round(rss_bytes(daemon.pid) / 2**20, 1)
            figures["risk_series"] = scrape(metrics_url)["risk_series"]
        finally:
            daemon.terminate()
            daemon.wait(30)
            if live is not None:
                live.join(60)
            if profiler is not None:
                profiler.join()
    figures.update(summarise(timeline, fill_samples, total))
    figures["timeline"] = timeline
    figures["profile_main_thread_top"] = profiled
    figures["load_avg_end"] = os.getloadavg()
    figures["work_dir"] = str(work)
    print(dump(figures))


def summarise(timeline: list[dict], fill_samples: int, total: int) -> dict:
    """samples/s while windows fill (nothing scored yet) and once windows are scored."""
    def rate(rows: list[dict]) -> float | None:
        if len(rows) < 2 or rows[-1]["t"] == rows[0]["t"]:
            return None
        return round((rows[-1]["samples"] - rows[0]["samples"]) / (rows[-1]["t"] - rows[0]["t"]))

    end = next((i for i, r in enumerate(timeline) if r["samples"] >= total), len(timeline) - 1)
    rows = [r for r in timeline[: end + 1] if r["samples"] > 0]
    filling = [r for r in rows if r["scored"] == 0]
    scoring = [r for r in rows if r["scored"] > 0]
    return {"fill_samples_per_s": rate(filling), "scoring_samples_per_s": rate(scoring),
            "scoring_windows_per_s": round((scoring[-1]["scored"] - scoring[0]["scored"])
                                           / (scoring[-1]["t"] - scoring[0]["t"]))
            if len(scoring) > 1 else None,
            "windows_scored": timeline[-1]["scored"] if timeline else 0,
            "max_lag_scoring": max((r["lag"] for r in scoring), default=None),
            "finished": bool(rows) and rows[-1]["samples"] >= total, "samples_expected": total}


if __name__ == "__main__":
    main()
