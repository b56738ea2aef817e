"""The rules file: the shipped example validates; mistakes fail at start-up with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.alerts.rules import AlertRulesError, RateRule, load_rules, parse_duration, parse_rules

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "alert-rules.yaml"


def test_example_rules_file_validates_with_and_without_receivers() -> None:
    rules = load_rules(EXAMPLE, receivers=[])  # notify: alertmanager: no receivers of ours
    kinds = {r.kind for r in rules.rules}
    assert kinds == {"verdict", "rate", "repeat_offender", "model_hopping"}
    rules = load_rules(EXAMPLE, receivers=["secops-webhook"])
    default = rules.route.for_receiver("secops-webhook")
    assert default.group_by == ["alertname", "tenant"] and default.group_wait == 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("250ms", 0.25), (12, 12), ("1.5h", 5400)],
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("yaml_text", "fragments"),
    [
        ("rules: [{name: a, kind: rate, window: 5m}]", ["rules[0] (name=a)", "exactly one of 'threshold' or 'baseline'"]),
        ("rules: [{name: a, kind: verdict, resolve_after: soon}]", ["rules[0] (name=a).resolve_after", "invalid duration"]),
        ("rules: [{name: a, kind: nonsense}]", ["rules[0] (name=a)", "verdict"]),
        ("rules: [{name: a, kind: verdict, match: {categories: [spam]}}]", ["match.categories", "cyber_abuse"]),
        ("rules: [{name: a, kind: verdict}, {name: a, kind: verdict}]", ["duplicate rule names", "'a'"]),
        ("rules: [{name: a, kind: rate, measure: share, threshold: 5}]", ["share threshold"]),
        ("rules: [{name: a, kind: verdict, thresold: 3}]", ["thresold", "Extra inputs"]),
        # endsAt in year 29000: formatting it for Alertmanager failed every push (2026-12-04)
        ("rules: [{name: a, kind: verdict, resolve_after: 9999999d}]", ["resolve_after", "at most 3650d"]),
        ("rules: [{name: a, kind: repeat_offender, half_life: 99999999999999h, threshold: 5}]", ["half_life", "at most 3650d"]),
        ("rules: [{name: a, kind: verdict]", ["not valid YAML"]),
        # Alertmanager drops an empty label, so its fingerprint differed from ours (2026-12-06)
        ("rules: [{name: a, kind: verdict, labels: {team: ''}}]", ["labels", "'team' has an empty value"]),
    ],
)
def test_invalid_rules_fail_with_a_message_that_points_at_the_problem(yaml_text: str, fragments: list[str]) -> None:
    with pytest.raises(AlertRulesError) as info:
        parse_rules(yaml_text, "rules.yaml")
    message = str(info.value)
    assert message.startswith("rules.yaml") and "\n" not in message  # one line (hostile review, 2026-12-07)
    for fragment in fragments:
        assert fragment in message


def test_unknown_receiver_is_an_error_at_start_up() -> None:
    with pytest.raises(AlertRulesError, match="unknown receiver 'pager'.*configured receivers: \\['ops'\\]"):
        parse_rules("rules: [{name: a, kind: verdict, receivers: [pager]}]", "r.yaml", receivers=["ops"])


def test_missing_file_is_reported_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(AlertRulesError, match="nope.yaml"):
        load_rules(tmp_path / "nope.yaml")


def test_rate_rule_keeps_history_for_its_baseline() -> None:
    rules = parse_rules("rules: [{name: s, kind: rate, window: 5m, baseline: {windows: 12}}]")
    rule = rules.rules[0]
    assert isinstance(rule, RateRule)
    assert rule.history_s == 13 * 300


def test_inhibit_rules_are_alertmanagers_job_now() -> None:
    with pytest.raises(AlertRulesError, match="inhibit_rules"):
        parse_rules("rules: []\ninhibit_rules: [{source_match: {severity: critical}, target_match: {}}]")


def test_the_longest_duration_still_gives_an_end_alertmanager_can_read() -> None:
    import time

    from pipeline.alerts.model import rfc3339
    from pipeline.alerts.rules import MAX_DURATION_S

    assert parse_duration("3650d") == MAX_DURATION_S
    assert rfc3339(time.time() + MAX_DURATION_S).startswith("20")


def test_repeat_offender_weights_given_replace_only_their_own_defaults() -> None:
    """``weights: {critical: 20}`` made every other severity weigh 0: 50 high verdicts scored 0
    and the rule never fired for them (an on-call review, 2026-12-06)."""
    from pipeline.schemas import Severity

    [rule] = parse_rules("rules: [{name: r, kind: repeat_offender, weights: {critical: 20, low: 0}}]").rules
    assert rule.weights == {Severity.LOW: 0.0, Severity.MEDIUM: 2.0, Severity.HIGH: 4.0, Severity.CRITICAL: 20.0}
    [default] = parse_rules("rules: [{name: r, kind: repeat_offender}]").rules
    assert default.weights == {Severity.LOW: 1.0, Severity.MEDIUM: 2.0, Severity.HIGH: 4.0, Severity.CRITICAL: 8.0}


def test_a_rule_with_a_key_written_twice_is_refused() -> None:
    """A hostile review (2026-12-07): a rule with `match:` twice passed `alerts test` and watched
    the second category, not the first."""
    from pipeline.alerts.rules import AlertRulesError, parse_rules

    text = (
        "rules:\n"
        "  - name: cyber\n"
        "    match: {category: cyber_abuse}\n"
        "    match: {category: misinformation}\n"
    )
    with pytest.raises(AlertRulesError, match=r"^r\.yaml:4:5: not valid YAML: the key 'match' is written twice$"):
        parse_rules(text, source="r.yaml")
