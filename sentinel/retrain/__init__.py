"""Retraining in the background: schedule, child process, holdout gate, model registry.

Owns the APScheduler job (`scheduler`), the training child process (`child`, run as
``python -m sentinel.retrain.child`` so TensorFlow never loads in the daemon), the
holdout gate a candidate must pass (`gate`) and the versioned registry the daemon loads
from (`registry`). May import `sentinel.training`, `sentinel.model`, `sentinel.core`,
`sentinel.config`, `sentinel.daemon.history_store` and the root helpers; the daemon side
imports only `scheduler` and `registry` (neither imports TensorFlow).
"""
