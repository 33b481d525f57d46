"""The pure data flow: samples -> 10 s buckets -> windows -> features -> labels -> alerts.

Owns decoding/validation of samples (`samples`), event-time bucketing with a watermark
(`buckets`), rolling windows (`windows`), feature transforms and scaling (`features`),
failure labels (`labels`), the alert state machine (`alerts`), the per-service bookkeeping
(`services`) and the pipeline that strings them together (`pipeline`).

Pure: time is an argument, nothing here reads a clock, a file, a socket or Kafka. May import
only `sentinel.core`, `sentinel.config.schema`, `sentinel.errors`, numpy and the
non-I/O standard library (tests/test_layout.py checks this).
"""
