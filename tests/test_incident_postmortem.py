"""The post-mortem draft of a resolved incident, in process: the real store, scheduler, Web API
chat and Slack fake, and a clock the test moves by hand — so every time in the draft is known.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from bot.runbook.incidents.escalation import Action
from bot.runbook.incidents.postmortem import compose, span
from bot.runbook.incidents.postmortem_facts import gather
from bot.slack.chat import CONNECTION_LOST, ChatError, Upload
from bot.slack.web_api import SlackChat
from bot.store import AlertWrite, NewAlertEvent, NewEvent, Store
from tests.support.clock import START
from tests.support.slack_fake import SlackFake
from tests.test_incidents import LEAD, ONCALL, World, scenario

ENV = "production"


def write_alert(store: Store, value: float) -> int:
    """A Critical error-rate alert on production, fired now (as the checker writes one)."""
    now = store.clock()
    created = store.save_alert_states(
        [],
        [
            AlertWrite(
                ENV,
                "error_rate",
                None,
                {
                    "status": "firing",
                    "level": "Critical",
                    "peak_level": "Critical",
                    "opened_at": now,
                    "level_since": now,
                    "value": value,
                },
            )
        ],
    )
    return created[(ENV, "error_rate")]


def rollback(store: Store, minutes: float) -> int:
    """A rollback of production by the lead, lasting `minutes` of the hand-moved clock."""
    clock = store.clock
    run = store.begin_deployment(
        kind="rollback",
        environment=ENV,
        requested_by="U0LEAD",
        version="v1.4.1",
        options={},
        owner="test",
    )
    assert not hasattr(run, "lock"), run
    clock.advance(minutes=minutes)  # type: ignore[attr-defined]
    assert store.finish_deployment(run.id, "succeeded", "3 hosts back on v1.4.1")  # type: ignore[union-attr]
    return run.id  # type: ignore[union-attr]


def timeline_of(markdown: str) -> list[str]:
    section = markdown.split("## Timeline\n\n", 1)[1].split("\n\n", 1)[0]
    return section.splitlines()


def test_the_draft_lists_page_ack_alert_and_rollback_in_order_with_tta_and_ttr(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        store = w.store
        alert_id = write_alert(store, 7.5)
        incident, _ = await w.incidents.open_incident(
            "Critical alert: Error rate on production: 7.5 %",
            1,
            "alert",
            dedupe_key=f"alert:{ENV}:error_rate",
        )
        store.change_alert(alert_id, 1, {"incident_id": incident.id})
        await w.settle()
        await w.later(minutes=10)  # nobody answered: level 2 paged at 12:10
        (page,) = w.dms(LEAD)
        await w.later(minutes=2)
        await w.press(Action.ACKNOWLEDGE, "U0LEAD", page)  # 12:12
        w.clock.advance(minutes=2)
        rollback_id = rollback(store, 3)  # 12:14 → 12:17
        w.clock.advance(minutes=1)
        alert = store.alert(alert_id)
        assert alert is not None
        store.change_alert(
            alert_id,
            alert.version,
            {"status": "resolved", "level": "Normal", "resolved_at": w.clock(), "value": 0.4},
            NewAlertEvent("resolved", "Back to Normal: 0.4 %"),
        )  # 12:18
        await w.later(minutes=2)
        await w.press(Action.RESOLVE, "U0LEAD", w.card())  # 12:20
        await w.later(minutes=5)  # later syncs (and the draft is not shared again)
        await w.incidents.sync(incident.id)

        (shared,) = w.slack.files_in(w.channel or "")
        assert shared["name"] == "INC-1-postmortem.md"
        assert shared["title"] == "Post-mortem draft · INC-1"
        share = next(m for m in w.slack.channel_messages(w.channel or "") if m.get("files"))
        assert share["thread_ts"] == w.card()["ts"]  # in the incident's thread
        markdown = shared["content"].decode()

        assert markdown.startswith("# Post-mortem draft: INC-1 — Critical alert: Error rate")
        assert "- **Environment:** production (from the alert that opened it)" in markdown
        assert "- **Time to acknowledge:** 12 min 00 s by @U0LEAD" in markdown
        assert (
            "- **Time to resolve:** 20 min 00 s (resolved 2026-11-27 12:20:00 UTC by @U0LEAD)"
            in markdown
        )
        assert "reached level 2 of 4 (DevOps Team Lead); 2 pages to 2 people" in markdown
        opened = (
            "Incident opened, by the Error rate alert on production (Critical: paged automatically)"
        )
        run = f"Rollback #{rollback_id} of production to v1.4.1"
        assert timeline_of(markdown) == [
            f"- **12:00:00** (+0:00) — {opened}",
            "- **12:00:00** (+0:00) — Paged @U0ONCALL (level 1, On-call DevOps Engineer)",
            "- **12:00:00** (+0:00) — Alert fired: Error rate on production",
            "- **12:10:00** (+10:00) — Escalated to level 2 (DevOps Team Lead) by the deadline",
            "- **12:10:00** (+10:00) — Paged @U0LEAD (level 2, DevOps Team Lead)",
            "- **12:12:00** (+12:00) — Acknowledged by @U0LEAD",
            f"- **12:14:00** (+14:00) — {run} started by @U0LEAD",
            f"- **12:17:00** (+17:00) — {run} succeeded — 3 hosts back on v1.4.1",
            "- **12:18:00** (+18:00) — Alert Error rate on production: Back to Normal: 0.4 %",
            "- **12:20:00** (+20:00) — Resolved by @U0LEAD",
        ]
        # The sections of the runbook's write-up, with what only people know left blank.
        for heading in ("Summary", "Impact", "Timeline", "What went well", "What to improve"):
            assert f"\n## {heading}\n" in markdown
        assert f"Rollback #{rollback_id} of production to v1.4.1 succeeded." in markdown
        assert "Nobody acknowledged in time: escalated 1 time by the deadline." in markdown
        assert "| Action | Owner | Due |\n| --- | --- | --- |\n|  |  |  |" in markdown

    scenario(tmp_path, slack, body)


def test_the_draft_of_an_open_incident_says_so_and_leaves_out_other_environments(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        store = w.store
        w.clock.advance(hours=-2)
        store.begin_deployment(  # long before: outside the window
            kind="deploy",
            environment=ENV,
            requested_by="U0DEV",
            version="v1.3",
            options={},
            owner="test",
        )
        w.clock.advance(hours=2)
        alert_id = write_alert(store, 9.0)
        incident, _ = await w.incidents.open_incident(
            "errors | everywhere", 2, "alert", dedupe_key=f"alert:{ENV}:error_rate"
        )
        store.change_alert(alert_id, 1, {"incident_id": incident.id})
        store.begin_deployment(
            kind="deploy",
            environment="staging",
            requested_by="U0DEV",
            version="v2",
            options={},
            owner="test",
        )
        w.clock.advance(minutes=2)
        for env in (ENV, "staging"):  # a diagnosis of another environment is not this one's
            audit_id = store.audit_start(
                user_id="U0ONCALL", channel_id="C0OPS", command="/health", text=f"{env} diagnose"
            )
            store.audit_finish(
                audit_id, outcome="ok", result=f"Diagnosis of {env}: Service crashed\nmore"
            )
        store.note_incident(incident.id, NewEvent("checklist_tick", 0, "U0LEAD", "Stop services"))
        w.clock.advance(minutes=5)
        facts = await asyncio.to_thread(gather, store, incident.id, w.clock())
        assert facts is not None
        markdown = compose(facts, w.clock())
        assert "- **Time to acknowledge:** never acknowledged" in markdown
        assert "- **Time to resolve:** not resolved yet (7 min 00 s open)" in markdown
        assert "errors \\| everywhere" in markdown  # a table-breaking bar is escaped
        assert "v1.3" not in markdown and "staging" not in markdown
        assert timeline_of(markdown)[-2:] == [
            "- **12:02:00** (+2:00) — Checklist tick (@U0LEAD): Stop services",
            "- **12:02:00** (+2:00) — `/health production diagnose` by @U0ONCALL: Diagnosis of "
            "production: Service crashed",
        ]
        assert "Diagnosed from the channel (1 run)." in markdown

    scenario(tmp_path, slack, body)


def test_span_reads_like_the_cards() -> None:
    assert span(timedelta(seconds=45)) == "45 s"
    assert span(timedelta(minutes=3, seconds=5)) == "3 min 05 s"
    assert span(timedelta(hours=1, minutes=2)) == "1 h 02 min"
    assert START.hour == 12  # the times above count from the hand-moved clock's start


class AnswerLostOnce(SlackChat):
    """Slack's Web API where the first upload is carried out but its answer never comes back
    (the connection dropped after completeUploadExternal): the sender cannot tell it landed."""

    lost = False

    async def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> str:
        shared = await super().upload(channel, upload, thread_ts=thread_ts)
        if not self.lost:
            self.lost = True
            raise ChatError(CONNECTION_LOST, in_doubt=True)
        return shared


def test_an_upload_whose_answer_was_lost_is_found_in_the_thread_not_shared_twice(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        w.chat = AnswerLostOnce(w.chat.client)
        w.scheduler, w.incidents = w.start_bot()
        await w.open()
        (page,) = w.dms(ONCALL)
        await w.press(Action.RESOLVE, "U0ONCALL", page)
        row = w.store.delivery("INC-1/postmortem/resolved")
        assert row is not None and row.state == "waiting" and row.in_doubt
        for _ in range(10):  # the sync timer tries again, later, until it is settled
            await w.later(minutes=1)
            row = w.store.delivery("INC-1/postmortem/resolved")
            assert row is not None
            if row.state == "sent":
                break
        assert row.state == "sent"
        assert len(w.slack.files_in(w.channel or "")) == 1
        assert len(w.slack.calls_to("files.completeUploadExternal")) == 1

    scenario(tmp_path, slack, body)


def test_a_failed_rollbacks_incident_takes_its_environment_from_the_rollback(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        store = w.store
        run = store.begin_deployment(
            kind="rollback",
            environment=ENV,
            requested_by="U0LEAD",
            version=None,
            options={},
            owner="test",
        )
        w.clock.advance(minutes=4)
        store.finish_deployment(run.id, "rollback_failed", "prod-2 did not come back")  # type: ignore[union-attr]
        incident, _ = await w.incidents.open_incident(
            "Rollback failed",
            1,
            "rollback",
            opened_by="U0LEAD",
            dedupe_key=f"rollback:{run.id}",  # type: ignore[union-attr]
        )
        facts = await asyncio.to_thread(gather, store, incident.id, w.clock())
        assert facts is not None
        markdown = compose(facts, w.clock())
        assert "- **Environment:** production (from the rollback that opened it)" in markdown
        assert "Incident opened, by a rollback that failed, requested by @U0LEAD" in markdown
        assert f"- Rollback #{run.id} of production ended rollback failed." in markdown  # type: ignore[union-attr]

    scenario(tmp_path, slack, body)
