"""Slack names the config uses ('#ops-alerts', '@alice', alice@example.com) and their ids.

Each start resolves the config's names through Slack and remembers the answers here, so a
restart while Slack is away still knows who and where they are (bot/slack/setup/names.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import DateTime, String, select
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.base import Base, StoreCore, _guarded


class SlackNameRecord(Base):
    """A name as the config writes it, and the id Slack last resolved it to."""

    __tablename__ = "slack_names"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    slack_id: Mapped[str] = mapped_column(String(64))
    resolved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NameStore(StoreCore):
    @_guarded
    def cached_ids(self, names: Iterable[str]) -> dict[str, str]:
        """The remembered id of each of `names` that has one."""
        wanted = list(names)
        if not wanted:
            return {}
        with self._session() as session:
            rows = session.execute(
                select(SlackNameRecord.name, SlackNameRecord.slack_id).where(
                    SlackNameRecord.name.in_(wanted)
                )
            )
            return {name: slack_id for name, slack_id in rows}

    @_guarded
    def remember_ids(self, ids: Mapping[str, str]) -> None:
        """Remember (or correct) each name's id, as resolved now."""
        now = self.clock()
        with self._session() as session, session.begin():
            for name, slack_id in ids.items():
                session.merge(SlackNameRecord(name=name, slack_id=slack_id, resolved_at=now))
