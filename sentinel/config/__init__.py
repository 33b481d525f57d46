"""Configuration: YAML parsed once, at start-up, into frozen typed objects.

Owns the schema (`schema`: the dataclasses every layer reads), the readers (`readers`:
durations, sizes, host:port, URLs; `secrets`: where a secret comes from, read at start-up),
the schedule (`schedule`), and loading/validation (`load`). May import only the standard
library, yaml, apscheduler (triggers, lazily) and `sentinel.errors`. Import the submodule
you need (``from sentinel.config.schema import Config``); this file re-exports nothing.
"""
