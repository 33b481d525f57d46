"""Alert delivery: a durable outbox, and interchangeable sinks (webhooks, Alertmanager).

    >>> from sentinel.sinks import Notifier
    >>> with Notifier(config.alerting, config.state.dir, registry=registry) as notifier:
    ...     notifier.submit(transition)   # durable on return; delivered by worker threads

Modules: `outbox` (the on-disk queue), `webhook` and `alertmanager` (what each sink sends),
`transport` (the stdlib HTTP edge), `notifier` (worker threads, retries, metrics).
"""

from sentinel.sinks.notifier import Notifier
from sentinel.sinks.outbox import Delivery, Outbox, OutboxError
from sentinel.sinks.transport import HttpTransport, Post, TransportError, http_post

__all__ = ["Delivery", "HttpTransport", "Notifier", "Outbox", "OutboxError", "Post", "TransportError",
           "http_post"]
