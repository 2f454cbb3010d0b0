"""Where a recovery checklist stands, read from the incident's timeline events (in id order),
and its Block Kit as Slack would take it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.runbook.incidents.checklists import BY_KEY, PROCEDURES, Tick, checklists
from bot.slack.incidents import checklist_blocks
from bot.store import Incident, IncidentEvent
from tests.support.slack_fake import block_kit_errors

T0 = datetime(2026, 12, 6, 14, 0, tzinfo=UTC)


def event(event_id: int, kind: str, detail: str, user: str | None = None) -> IncidentEvent:
    return IncidentEvent(event_id, 1, 1, kind, 0, user, detail, T0 + timedelta(seconds=event_id))


def incident(environment: str | None = "production") -> Incident:
    return Incident(
        id=1,
        summary="orders table corrupt",
        severity=1,
        source="/escalate",
        link=None,
        opened_by="U1",
        channel="C1",
        dedupe_key=None,
        plan={},
        status="triggered",
        seq=1,
        level=0,
        top_level=0,
        paged_seq=1,
        deadline_at=None,
        opened_at=T0,
        acknowledged_by=None,
        acknowledged_at=None,
        first_acknowledged_at=None,
        reminded_at=None,
        resolved_by=None,
        resolved_at=None,
        environment=environment,
    )


def test_ticks_and_unticks_fold_in_order_and_strays_are_ignored() -> None:
    events = [
        event(1, "opened", "/escalate"),
        event(2, "checklist", "complete_failure", "U1"),
        event(3, "checked", "2:0", "U1"),
        event(4, "checked", "2:3", "U2"),  # at the same moment as another: both count
        event(5, "checked", "2:1", "U2"),
        event(6, "unchecked", "2:1", "U1"),
        event(7, "checked", "2:99", "U1"),  # no such step
        event(8, "checked", "77:0", "U1"),  # no such checklist
        event(9, "checklist", "no_such_procedure", "U1"),
        event(10, "checklist", "data_corruption", "U3"),
    ]
    states = checklists(reversed(events))  # the order they are given in does not matter
    assert sorted(states) == [2, 10]
    first = states[2]
    assert first.procedure is BY_KEY["complete_failure"]
    assert first.ticks[0] == Tick("U1", T0 + timedelta(seconds=3))
    assert first.ticks[3] == Tick("U2", T0 + timedelta(seconds=4))
    assert first.ticks[1] is None and first.done == 2
    assert first.last_event_id == 6
    assert states[10].done == 0 and states[10].last_event_id == 10


def test_every_procedure_renders_as_slack_takes_it_ticked_or_not() -> None:
    for procedure in PROCEDURES:
        events = [event(2, "checklist", procedure.key, "U1")]
        events += [
            event(3 + i, "checked", f"2:{i}", "U0ONCALLABCDEF") for i in range(len(procedure.steps))
        ]
        for environment in ("production", None):
            state = checklists(events)[2]
            shown = checklist_blocks.checklist(incident(environment), state)
            assert block_kit_errors(shown.blocks) == [], procedure.key
            assert f"{len(procedure.steps)} of {len(procedure.steps)} steps done" in shown.text
    choices = checklist_blocks.choices(incident())
    assert block_kit_errors(choices.blocks) == []


def test_block_ids_and_values_parse_back() -> None:
    assert checklist_blocks.parse_step_block_id(checklist_blocks.step_block_id(3, 41, 2)) == (
        3,
        41,
        2,
    )
    assert checklist_blocks.parse_step_block_id("checklist:INC-3:41:x") is None
    assert checklist_blocks.parse_step_block_id(None) is None
    assert checklist_blocks.parse_post_value("INC-3:data_corruption") == (3, "data_corruption")
    assert checklist_blocks.parse_post_value("INC-3:$(reboot)") is None
