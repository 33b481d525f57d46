"""Which dependency drove an alert: `cause_service`, by leaving dependencies out.

    >>> cause_service(risk=0.82, without_dependencies=0.31, without_each={"payment": 0.80,
    ...               "inventory": 0.35}, threshold=0.6)
    'inventory'

The rule, evaluated once per firing (firings are rare, so the few extra windows scored cost
nothing that matters):

1. the dependencies are *material* when the caller's risk with every dependency channel
   neutral (`without_dependencies`, sentinel.core.context's neutral value) stays below the
   alert threshold: without its dependencies' steps, the model would not have fired;
2. then the cause is the dependency whose leaving-out alone lowers the risk the most
   (`without_each`: the risk with that one dependency missing), ties to the first name;
3. otherwise (the caller's own window is enough to fire) there is no cause: None.

Kept in its own small function so that it can be merged with a per-alert attribution over
the caller's own metrics (an occlusion of the same kind).
"""

from __future__ import annotations

from collections.abc import Mapping


def cause_service(risk: float, without_dependencies: float, without_each: Mapping[str, float],
                  threshold: float) -> str | None:
    if not without_each or without_dependencies >= threshold:
        return None
    name, rest = min(without_each.items(), key=lambda item: (item[1], item[0]))
    return name if risk - rest > 0 else None
