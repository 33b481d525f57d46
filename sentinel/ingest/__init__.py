"""Foreign metrics in: Prometheus (via prometheus-kafka-adapter and `query_range`), Telegraf and
OpenTelemetry, turned into Sentinel samples.

Owns the decoders of the foreign message formats (`formats`, `otlp`: bytes -> points or a
Rejection), the assembly of points into samples per (service, step) (`assemble`), the
`sentinel ingest` bridge on Kafka (`bridge`) and `sentinel backfill` from Prometheus
(`backfill`). `formats`, `otlp` and `assemble` are pure (no I/O, no clock); `bridge` and
`backfill` are the edges. May import `sentinel.core`, `sentinel.config`, `sentinel.errors`,
`sentinel.daemon`'s Kafka helpers and `sentinel.tls`.
"""
