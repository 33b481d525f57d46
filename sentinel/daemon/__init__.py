"""The long-running daemon's parts: the run loop and the edges it talks to.

Owns the run loop and its ports (`daemon`), the Kafka source, commits and dead letters
(`kafka_io`) over one edge to kafka-python (`kafka_client`: settings, the producer factory,
KafkaError -> KafkaUnavailable), the history store (`history_store`), model hot swap (`hotswap`), rebuild
hints (`rebuild_hints`), Prometheus telemetry (`telemetry`), the HTTP endpoints
(`health`) and systemd notification (`sdnotify`). May import `sentinel.core`,
`sentinel.model`, `sentinel.config`, `sentinel.sinks`, `sentinel.retrain.registry` and
the root helpers (`errors`, `tls`); never TensorFlow or `sentinel.training`. Wired
together by `sentinel.runner`.
"""
