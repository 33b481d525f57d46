"""The test broker lives in the package (the quick start uses it too); re-exported for tests."""

from sentinel.sim.localbroker import FAST_GROUP, TansuBroker, free_port, tansu_binary

__all__ = ["FAST_GROUP", "TansuBroker", "free_port", "tansu_binary"]
