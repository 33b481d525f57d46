"""The one shared test kit: helpers and real infrastructure for the tests, exposed as
fixtures by tests/conftest.py (`fake_clock`, `receiver`, `kafka_broker`, `trained`,
`wait_until`). Test modules import from here, never from each other.

Modules: `clock` (FakeClock), `http` (Receiver, Reply, Received), `wait` (wait_until),
`broker` (the tansu broker), `daemon` (configs, producing, scraping, daemons),
`security` (a throwaway PKI, a TLS/SASL Kafka gateway).
"""
