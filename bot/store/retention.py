"""Retention: rows the bot writes all the time, dropped once they are older than the config's
`retention` (the runbook's log retention, 90 days by default); a periodic job calls these
(bot/slack/services.py).

- timers that fired (a pending timer is never dropped, however old);
- the audit log;
- events: the timelines of incidents resolved before then (the incident rows stay, with who
  opened, acknowledged and resolved them and when) and alert thread lines already posted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from bot.store.alerts import AlertEventRecord
from bot.store.audit import AuditRecord
from bot.store.base import StoreCore, _guarded
from bot.store.incidents import IncidentEventRecord, IncidentRecord
from bot.store.timers import TimerRecord


class RetentionStore(StoreCore):
    """Store's pruning methods; each returns how many rows went."""

    @_guarded
    def prune_fired_timers(self, before: datetime) -> int:
        with self._session() as session, session.begin():
            result = session.execute(
                delete(TimerRecord).where(
                    TimerRecord.fired_at.is_not(None), TimerRecord.fired_at < before
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    @_guarded
    def prune_audit(self, before: datetime) -> int:
        with self._session() as session, session.begin():
            result = session.execute(delete(AuditRecord).where(AuditRecord.started_at < before))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    @_guarded
    def prune_events(self, before: datetime) -> int:
        resolved = select(IncidentRecord.id).where(
            IncidentRecord.status == "resolved", IncidentRecord.resolved_at < before
        )
        with self._session() as session, session.begin():
            incident_events = session.execute(
                delete(IncidentEventRecord).where(IncidentEventRecord.incident_id.in_(resolved))
            )
            alert_events = session.execute(
                delete(AlertEventRecord).where(
                    AlertEventRecord.done.is_(True), AlertEventRecord.at < before
                )
            )
            return int(incident_events.rowcount or 0) + int(alert_events.rowcount or 0)  # type: ignore[attr-defined]
