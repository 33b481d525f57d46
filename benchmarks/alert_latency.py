"""Alert latency: from the sample that closes a bucket to the webhook call it causes, p50/p99.

    python benchmarks/alert_latency.py [--services 10000] [--live-steps 15] [--step-seconds 10]

A tansu broker, `python -m sentinel run` (the shipped config: for_steps 3, resolve_steps 6,
the outbox fsynced before delivery) and a webhook receiver on loopback. The model's weights
are set by hand (kit.write_model `fires_on`): its risk is ~1 when the last step's error rate
is high, ~0 otherwise, so the benchmark decides which services alert. The windows are
filled first (produced before the daemon starts); then `--live-steps` steps are produced at
the real cadence, `--services` samples spread evenly over each `--step-seconds`, and every
`for_steps` steps a new group of services (one in `--fail-period`) starts a failure that
lasts `for_steps` steps: each fires once, on the bucket of its last failing step, and
resolves later.

A bucket [t, t + step) closes when its service's sample with ts >= t + step +
allowed_lateness arrives; the latency of an alert is the receiver's arrival time of the
webhook call minus the time that closing sample was handed to the Kafka client
(time.time() on both sides, one machine). Prints p50/p99/max for firing and resolved
alerts, then the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from kit import STEP_SECONDS, dump, produce, produce_parallel, scrape, start_daemon, write_config, write_model

from sentinel.config.load import load_config
from sentinel.sim.localbroker import TansuBroker

TOPIC = "sentinel.metrics"


class Receiver:
    """Records (arrival time, service, status, startsAt) of every alert POSTed to it."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str, str, float]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                now = time.time()
                for alert in body["alerts"]:
                    receiver.got.append((now, alert["labels"]["service"], alert["status"],
                                         datetime.fromisoformat(alert["startsAt"]).timestamp()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"


def percentiles(seconds: list[float]) -> dict[str, float | int]:
    if not seconds:
        return {"n": 0}
    ms = np.array(seconds) * 1000
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--live-steps", type=int, default=15)
    parser.add_argument("--step-seconds", type=float, default=10.0,
                        help="wall seconds per 10 s step in the live phase (10: real time)")
    parser.add_argument("--fail-period", type=int, default=500,
                        help="one service in this many fails in each group")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sentinel-latency-"))
    receiver = Receiver()
    figures: dict = {"services": args.services, "step_seconds": args.step_seconds,
                     "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    with TansuBroker(log_dir=work) as broker:
        broker.create_topic(TOPIC, partitions=args.partitions)
        cfg_path, metrics_url = write_config(
            work / "config.yaml", bootstrap=broker.bootstrap, topic=TOPIC,
            model_dir=work / "model", state_dir=work / "state", services=args.services,
            threshold=0.5, webhook_url=receiver.url)
        config = load_config(cfg_path)
        write_model(work / "model", cfg_path, fires_on="error_rate")
        lateness_steps = int(config.stream.allowed_lateness_seconds // STEP_SECONDS)
        fill_steps = config.window_steps + lateness_steps + 1
        start_ts = (int(time.time()) // STEP_SECONDS * STEP_SECONDS
                    - STEP_SECONDS * (fill_steps + 10))
        produce_parallel(broker.bootstrap, TOPIC, args.services, fill_steps, start_ts)
        daemon = start_daemon(cfg_path, work / "daemon.log")
        try:
            while True:
                time.sleep(1.0)
                if daemon.poll() is not None:
                    raise SystemExit((work / "daemon.log").read_text()[-3000:])
                try:
                    m = scrape(metrics_url)
                except OSError:
                    continue
                if m.get("sentinel_samples_total", 0) >= args.services * fill_steps:
                    break
            print(f"windows filled; live for {args.live_steps} steps", flush=True)
            live = multiprocessing.get_context("spawn").Process(target=produce, kwargs=dict(
                bootstrap=broker.bootstrap, topic=TOPIC, services=range(args.services),
                first_step=fill_steps, steps=args.live_steps, start_ts=start_ts,
                rate=args.services / args.step_seconds, fail_period=args.fail_period,
                fail_steps=config.alerting.for_steps, times_out=str(work / "sent.npy")))
            live.start()
            live.join()
            time.sleep(5.0)  # the last deliveries
            m = scrape(metrics_url)
            figures["alerts_total"] = m.get("sentinel_alerts_total", 0)
            # where the time goes: a poll's bucket/window/score work, and outbox -> delivered
            figures["poll_processing_s_avg"] = round(
                m["sentinel_scoring_latency_seconds_sum"] / m["sentinel_scoring_latency_seconds_count"], 4)
            figures["outbox_to_delivered_s_avg"] = round(
                m["sentinel_delivery_latency_seconds_sum"]
                / max(1.0, m["sentinel_delivery_latency_seconds_count"]), 4)
        finally:
            daemon.terminate()
            daemon.wait(30)
            receiver.server.shutdown()
    sent = np.load(work / "sent.npy")
    latencies: dict[str, list[float]] = {"firing": [], "resolved": []}
    seen = set()
    for arrived, service, status, _starts in receiver.got:
        if (service, status, _starts) in seen:
            continue  # a retried delivery: the first one counts
        seen.add((service, status, _starts))
        # the alert's step is startsAt for a firing; for a resolve, the receiver only sees the
        # episode's start: its step is recovered from the failure pattern below
        index = int(service.split("-")[1])
        group_step = _failing_step(index, args.fail_period, config.alerting.for_steps,
                                   args.live_steps, status, config.alerting.resolve_steps)
        if group_step is None:
            continue
        closing = group_step + lateness_steps + 1  # live step whose sample closes the bucket
        if closing < len(sent):
            latencies[status].append(arrived - sent[closing, index])
    figures.update({status: percentiles(values) for status, values in latencies.items()})
    figures["all"] = percentiles(latencies["firing"] + latencies["resolved"])
    figures["load_avg_end"] = os.getloadavg()
    figures["work_dir"] = str(work)
    for status in ("firing", "resolved", "all"):
        print(status, figures[status])
    print(dump(figures))


def _failing_step(index: int, period: int, for_steps: int, live_steps: int, status: str,
                  resolve_steps: int) -> int | None:
    """The live step of the bucket an alert transition was raised on (kit.messages' pattern)."""
    groups = [g for g in range(0, live_steps, for_steps) if index % period == (g // for_steps) % period]
    if not groups:
        return None
    last_failing = groups[0] + for_steps - 1
    return last_failing if status == "firing" else last_failing + resolve_steps


if __name__ == "__main__":
    main()
