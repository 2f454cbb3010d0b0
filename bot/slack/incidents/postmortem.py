"""An incident's post-mortem draft in Slack: a Markdown file in the incident's thread.

Written when the incident is resolved (its sync pass, bot/slack/incidents/incidents.py, asks
for it once the card is posted), and again on `/escalate postmortem INC-<n>`. The file goes
through the outbox as an upload row (bot/slack/outbox.py): keyed, so the sync retried, a
second replica, or a restart never shares it twice — the resolution's draft has one key per
incident; each `/escalate postmortem` one of its own. An upload whose answer was lost is looked
for in the thread by its file name before it is tried again.

The words are bot/runbook/incidents/postmortem.py's (from the facts postmortem_facts.py
gathers); this module only says where they go.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.clock import Clock
from bot.runbook.incidents.escalation import incident_name
from bot.runbook.incidents.postmortem import compose
from bot.runbook.incidents.postmortem_facts import gather
from bot.slack.delivery import Dropped, Outcome
from bot.slack.outbox import Outbox
from bot.store import LANE_PAGE, Incident, NewDelivery, Store
from bot.store.outbox import UPLOAD

log = logging.getLogger(__name__)

POSTMORTEM_DELIVERY = "incident.postmortem"
ON_RESOLVE = "resolved"  # the key suffix of the draft shared when the incident is resolved


@dataclass(frozen=True)
class Thread:
    """Where the file goes: the card's channel, and its ts (or its outbox key while it waits)."""

    channel: str
    ts: str | None = None
    of: str | None = None


def postmortem_key(incident_id: int, suffix: str = ON_RESOLVE) -> str:
    return f"{incident_name(incident_id)}/postmortem/{suffix}"


def filename(incident_id: int, suffix: str = ON_RESOLVE) -> str:
    """Unique per share (the name is how a lost answer's upload is found again)."""
    tail = "" if suffix == ON_RESOLVE else f"-{suffix}"
    return f"{incident_name(incident_id)}-postmortem{tail}.md"


async def share_postmortem(
    outbox: Outbox,
    store: Store,
    clock: Clock,
    incident: Incident,
    thread: Thread,
    *,
    suffix: str = ON_RESOLVE,
    attempt: bool = True,
) -> Outcome:
    """Write the draft's upload row (once per key) and try it; how it stands."""
    key = postmortem_key(incident.id, suffix)
    written = await asyncio.to_thread(store.delivery, key)
    if written is not None:
        return await outbox.send_row(written, attempt=attempt)
    now = clock()
    facts = await asyncio.to_thread(gather, store, incident.id, now)
    if facts is None:  # deleted meanwhile (retention)
        return Dropped(f"{incident_name(incident.id)} is no longer on record")
    name = incident_name(incident.id)
    new = NewDelivery(
        key=key,
        kind=POSTMORTEM_DELIVERY,
        lane=LANE_PAGE,
        op=UPLOAD,
        channel=thread.channel,
        thread_ts=thread.ts,
        thread_of=thread.of,
        text=compose(facts, now),
        subject=name,
        payload={
            "filename": filename(incident.id, suffix),
            "title": f"Post-mortem draft · {name}",
        },
        about=f"{name} post-mortem draft in {thread.channel}",
    )
    return await outbox.send(new, attempt=attempt)
