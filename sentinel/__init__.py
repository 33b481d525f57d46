"""Sentinel: failure-risk monitoring and alerting for flash sales."""

import os as _os

# TensorFlow's C++ and absl logs (oneDNN notices, cpu_feature_guard, "All log messages before
# absl::InitializeLog()") go straight to stderr when TensorFlow is imported, which every
# command that trains does: they are read once here, before any import of TensorFlow, so
# every entry point (the CLI, `python -m sentinel`, the quick start) stays quiet. Set them
# in the environment to see the logs again.
for _name, _value in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GRPC_VERBOSITY", "ERROR"),
                      ("ABSL_MIN_LOG_LEVEL", "3")):
    _os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
