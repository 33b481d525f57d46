"""Simulation and demos: synthetic flash-sale traffic, the quick-start demo, a local broker.

Owns the deterministic traffic simulator (`simulate`), the end-to-end demo (`demo`) and the
loopback Kafka-protocol broker used by the demo, tests and benchmarks (`localbroker`).
May import anything in Sentinel; nothing in the runtime packages imports it.
"""
