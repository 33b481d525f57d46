"""The training child of a retraining run: `python -m sentinel.retrain.child ...`.

    python -m sentinel.retrain.child --config CFG --history DIR --holdout-from TS \\
        --out MODEL_DIR [--current MODEL_DIR]

Started by sentinel.retrain.scheduler in its own process (and session), with TensorFlow's and
OpenMP's thread pools bounded by `retrain.threads` and a lower CPU priority, so training
competes as little as possible with the daemon's scoring loop, and a crash, an OOM kill or
a timeout kill takes nothing of the daemon with it. It:

1. checks every history segment (sentinel.daemon.history_store.find_corrupt) and leaves the
   corrupt ones out;
2. trains on the history before `--holdout-from` (sentinel.training.train, written to a temporary
   directory and renamed to `--out`: killed midway, it leaves no model at `--out`), labelled
   as `training.labels` says (the `training.incidents` file re-read on every run) and with the
   operator feedback in ``<state.dir>/feedback.jsonl`` (sentinel.daemon.feedback_store);
3. grades the candidate and, with `--current`, the model in service on the holdout from
   `--holdout-from` on (sentinel.retrain.gate.grade);
4. prints one JSON object as its last stdout line: the training summary, both gradings
   and the corrupt segments. The parent decides; this process promotes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
NICENESS = 10


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sentinel.retrain.child")
    parser.add_argument("--config", required=True)
    parser.add_argument("--history", required=True, help="the history store's directory")
    parser.add_argument("--holdout-from", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--current", help="the model in service, graded on the same holdout")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-skill", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from sentinel.logs import setup_logging

    setup_logging(os.environ.get("SENTINEL_LOG_LEVEL", "info"))
    with contextlib.suppress(OSError):
        os.nice(NICENESS)  # the scoring loop comes first on a busy CPU
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from sentinel.config.load import load_config
    from sentinel.daemon.feedback_store import feedback_path, read_feedback
    from sentinel.daemon.history_store import SUFFIX, find_corrupt
    from sentinel.errors import ModelError, SentinelError
    from sentinel.model.artifact import load_model
    from sentinel.retrain.gate import grade
    from sentinel.training.history import DecodeStats, decode_lines, iter_jsonl_lines
    from sentinel.training.train import label_sources, train

    try:
        config = load_config(args.config)
    except SentinelError as exc:
        print(f"retrain: {exc}", file=sys.stderr)
        return 2
    corrupt = find_corrupt(Path(args.history))
    bad = {name for name, _, _ in corrupt}
    segments = [p for p in sorted(Path(args.history).glob("*" + SUFFIX)) if p.name not in bad]
    try:
        sources = label_sources(config, feedback=read_feedback(feedback_path(Path(config.state.dir))))
        summary = train(config, segments, Path(args.out), until_ts=args.holdout_from,
                        no_skill=args.no_skill, sources=sources)
    except SentinelError as exc:  # e.g. no failure in the history to learn from
        print(f"retrain: {exc}", file=sys.stderr)
        print(json.dumps({"error": str(exc), "corrupt": corrupt}))
        return 2

    context_ts = args.holdout_from - config.window_seconds - config.stream.allowed_lateness_seconds
    holdout = [s for s in decode_lines(iter_jsonl_lines(segments), DecodeStats(),
                                       max_future_seconds=config.stream.max_future_seconds)
               if s.ts >= context_ts]
    candidate = grade(config, load_model(Path(args.out), config), holdout, args.holdout_from)
    current = None
    if args.current:
        try:
            current = grade(config, load_model(Path(args.current), config), holdout,
                            args.holdout_from)
        except ModelError as exc:  # cannot be graded: the candidate is compared with nothing
            current = {"error": str(exc)}
    print(json.dumps({"training": summary, "candidate": candidate, "current": current,
                      "holdout_samples": len(holdout), "corrupt": corrupt}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
