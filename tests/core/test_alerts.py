"""The alert state machine: for-duration, hysteresis, resolve, cooldown, replays, episodes."""

from __future__ import annotations

import pytest

from sentinel.config.schema import AlertingConfig
from sentinel.core.alerts import AlertMachine, AlertTransition

STEP = 10
T0 = 1_763_899_200


def _machine(**overrides: float) -> AlertMachine:
    config = {"threshold": 0.5, "for_steps": 3, "resolve_threshold": 0.3, "resolve_steps": 2,
              "cooldown_seconds": 60.0, **overrides}
    return AlertMachine(AlertingConfig(**config), step_seconds=STEP)  # type: ignore[arg-type]


def _feed(machine: AlertMachine, risks: list[float], service: str = "cart", start: int = T0,
          ) -> list[tuple[int, str]]:
    """(step index, state) of each transition for consecutive steps from `start`."""
    out = []
    for i, risk in enumerate(risks):
        transition = machine.observe(service, start + i * STEP, risk)
        if transition is not None:
            out.append((i, transition.state))
    return out


@pytest.mark.parametrize(("risks", "transitions"), [
    ([0.9, 0.9, 0.9], [(2, "firing")]),
    ([0.9, 0.9, 0.1, 0.9, 0.9, 0.9], [(5, "firing")]),  # a dip restarts the count
    ([0.5, 0.5, 0.5], [(2, "firing")]),  # the threshold itself counts
    ([0.49, 0.49, 0.49, 0.49], []),
    ([0.9, 0.9], []),
    # hysteresis: between resolve_threshold and threshold keeps firing
    ([0.9, 0.9, 0.9, 0.4, 0.35, 0.3, 0.45, 0.3], [(2, "firing")]),
    # resolves after resolve_steps steps below resolve_threshold
    ([0.9, 0.9, 0.9, 0.2, 0.2], [(2, "firing"), (4, "resolved")]),
    ([0.9, 0.9, 0.9, 0.2, 0.4, 0.2, 0.29], [(2, "firing"), (6, "resolved")]),
])
def test_alert_transitions(risks: list[float], transitions: list) -> None:
    assert _feed(_machine(), risks) == transitions


def test_firing_carries_its_event_time_and_risk() -> None:
    m = _machine(for_steps=2)
    m.observe("cart", T0, 0.7)

    fired = m.observe("cart", T0 + STEP, 0.8)

    assert fired == AlertTransition("cart", "firing", T0 + STEP, 0.8, T0 + STEP)
    assert fired.to_json() == {"service": "cart", "state": "firing", "ts": T0 + STEP, "risk": 0.8,
                              "phase": "predicted"}
    assert m.firing() == {"cart": T0 + STEP}


def test_a_skipped_step_restarts_the_firing_count() -> None:
    m = _machine(for_steps=3)
    assert m.observe("cart", T0, 0.9) is None
    assert m.observe("cart", T0 + STEP, 0.9) is None
    assert m.observe("cart", T0 + 3 * STEP, 0.9) is None  # T0 + 2 steps was not scored
    assert m.observe("cart", T0 + 4 * STEP, 0.9) is None

    fired = m.observe("cart", T0 + 5 * STEP, 0.9)

    assert fired is not None and fired.state == "firing"


def test_a_skipped_step_restarts_the_resolve_count() -> None:
    m = _machine(for_steps=1, resolve_steps=2)
    m.observe("cart", T0, 0.9)
    assert m.observe("cart", T0 + STEP, 0.1) is None
    assert m.observe("cart", T0 + 3 * STEP, 0.1) is None

    resolved = m.observe("cart", T0 + 4 * STEP, 0.1)

    assert resolved is not None and resolved.state == "resolved"


def test_cooldown_blocks_firing_until_it_ends() -> None:
    m = _machine(for_steps=1, resolve_steps=1, cooldown_seconds=60.0)
    assert _feed(m, [0.9, 0.1]) == [(0, "firing"), (1, "resolved")]  # resolved at T0 + 10

    # high risk all through the cooldown (T0 + 10 .. T0 + 70): no firing
    during = [m.observe("cart", T0 + i * STEP, 0.9) for i in range(2, 7)]
    after = m.observe("cart", T0 + 7 * STEP, 0.9)

    assert during == [None] * 5
    assert after is not None and after.state == "firing" and after.ts == T0 + 70


def test_after_the_cooldown_a_new_firing_needs_for_steps_again() -> None:
    m = _machine(for_steps=2, resolve_steps=1, cooldown_seconds=20.0)
    # fire at 1, resolve at 2, cooldown until step 4; steps 4 and 5 are needed to fire again
    assert _feed(m, [0.9, 0.9, 0.1, 0.9, 0.9, 0.9]) == [
        (1, "firing"), (2, "resolved"), (5, "firing")]


@pytest.mark.parametrize("replayed_ts", [T0 + STEP, T0])
def test_replayed_steps_are_ignored(replayed_ts: int) -> None:
    m = _machine(for_steps=2)
    m.observe("cart", T0, 0.9)
    fired = m.observe("cart", T0 + STEP, 0.9)
    assert fired is not None

    assert m.observe("cart", replayed_ts, 0.9) is None
    assert m.observe("cart", replayed_ts, 0.0) is None
    # the replay did not disturb the count: resolving still needs two adjacent steps below
    assert m.observe("cart", T0 + 2 * STEP, 0.1) is None
    resolved = m.observe("cart", T0 + 3 * STEP, 0.1)
    assert resolved is not None and resolved.state == "resolved"


def test_episode_key_is_stable_within_an_episode_and_differs_between_episodes() -> None:
    m = _machine(for_steps=1, resolve_steps=1, cooldown_seconds=0.0)

    out = [m.observe("cart", T0 + i * STEP, r) for i, r in enumerate([0.9, 0.1, 0.9, 0.1])]

    first_fire, first_resolve, second_fire, second_resolve = out
    assert all(t is not None for t in out)
    assert first_fire.episode_key == first_resolve.episode_key
    assert second_fire.episode_key == second_resolve.episode_key
    assert first_fire.episode_key != second_fire.episode_key
    assert first_resolve.started_ts == T0 and second_resolve.started_ts == T0 + 2 * STEP
    # the same episode seen by another replica (or after a restart) has the same key
    other = _machine(for_steps=1).observe("cart", T0, 0.7)
    assert other is not None and other.episode_key == first_fire.episode_key


def test_episode_key_differs_between_services() -> None:
    a = AlertTransition("cart", "firing", T0, 0.9, T0)
    b = AlertTransition("pay", "firing", T0, 0.9, T0)

    assert a.episode_key != b.episode_key


def test_services_are_independent() -> None:
    m = _machine(for_steps=2)
    # interleaved: cart high, pay alternating; pay's steps must not break cart's streak
    assert m.observe("cart", T0, 0.9) is None
    assert m.observe("pay", T0, 0.1) is None
    cart = m.observe("cart", T0 + STEP, 0.9)
    assert m.observe("pay", T0 + STEP, 0.9) is None

    assert cart is not None and cart.service == "cart"
    assert m.firing() == {"cart": T0 + STEP} and m.firing_count() == 1

    m.drop("cart")
    assert m.firing() == {} and m.firing_count() == 0
    assert m.observe("pay", T0 + 2 * STEP, 0.9) is not None
    assert m.firing() == {"pay": T0 + 2 * STEP} and m.firing_count() == 1


def test_a_failure_nobody_predicted_fires_at_once_as_failing_and_holds_until_it_ends() -> None:
    machine = AlertMachine(AlertingConfig(threshold=0.5, for_steps=3, resolve_steps=1,
                                          resolve_threshold=0.3), step_seconds=STEP)
    assert machine.observe("cart", T0, 0.1, holding=True) is None  # rule holds, not yet `for`
    fired = machine.observe("cart", T0 + STEP, 0.1, holding=True, failed=True)
    assert fired is not None and (fired.state, fired.phase) == ("firing", "failing")
    # low risk, but the rule still holds: the alert stays firing
    assert machine.observe("cart", T0 + 2 * STEP, 0.0, holding=True, failed=True) is None
    resolved = machine.observe("cart", T0 + 3 * STEP, 0.0)
    assert resolved is not None and (resolved.state, resolved.phase) == ("resolved", "failing")


def test_a_predicted_alert_does_not_resolve_while_the_failure_rule_holds() -> None:
    machine = AlertMachine(AlertingConfig(threshold=0.5, for_steps=1, resolve_steps=1,
                                          resolve_threshold=0.3), step_seconds=STEP)
    fired = machine.observe("cart", T0, 0.9)
    assert fired is not None and fired.phase == "predicted"
    for k in range(1, 5):  # the model's risk falls while the service is failing
        assert machine.observe("cart", T0 + k * STEP, 0.0, holding=True, failed=k > 1) is None
    resolved = machine.observe("cart", T0 + 5 * STEP, 0.0)
    assert resolved is not None and (resolved.state, resolved.phase) == ("resolved", "predicted")


def test_default_for_and_resolve_are_durations() -> None:
    ten = AlertMachine(AlertingConfig(threshold=0.5), step_seconds=10)
    five_minutes = AlertMachine(AlertingConfig(threshold=0.5), step_seconds=300)
    assert (ten.for_steps, ten.resolve_steps) == (3, 6)
    assert (five_minutes.for_steps, five_minutes.resolve_steps) == (1, 1)
