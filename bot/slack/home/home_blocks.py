"""Block Kit for the App Home: one view of everything, for one viewer.

Top to bottom: open incidents (each with Acknowledge where the viewer may press it — the
incident card's own action id, value and block id, so the card's handler takes the press),
the viewer's approvals, firing alerts, every environment (the ones that need someone first;
past MAX_ENVIRONMENT_LINES the quiet rest is counted), and who is on call.

Nothing here depends on when it is drawn — no "5 minutes ago", only absolute times (Slack's
<!date> shows them in the viewer's own zone) — so a view that did not change draws the same
blocks, and the same digest (`digest`), and is not published again.

A Home view takes up to 100 blocks (a message 50): every part is capped well within that,
and `home_view` checks the total.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime

from bot.config import Access
from bot.runbook.alerts.states import Metric
from bot.runbook.alerts.states import Status as AlertStatus
from bot.runbook.health.health import Health
from bot.runbook.home.home import (
    EnvironmentState,
    HomeState,
    approvals_for,
    may_acknowledge,
)
from bot.runbook.incidents.escalation import Status, incident_name, plan_of
from bot.runbook.levels import Level as AlertLevel
from bot.slack.alerts.alert_blocks import scope
from bot.slack.blocks import (
    HEALTH_EMOJI,
    LEVEL_EMOJI,
    Block,
    button,
    context,
    cut,
    escape,
    header,
    section,
    sections_within,
)
from bot.slack.changes.lock_blocks import lock_holder
from bot.slack.incidents.incident_blocks import (
    ACKNOWLEDGE,
    STATUS_EMOJI,
    actions_block_id,
    status_line,
)
from bot.slack.oncall.oncall_blocks import Standing, standing_lines
from bot.store import Alert, Approval, Incident

MAX_VIEW_BLOCKS = 100  # Slack: a Home tab view
MAX_INCIDENTS = 25  # one block each
MAX_APPROVAL_LINES = 10  # of each list
MAX_ALERT_LINES = 30
MAX_ENVIRONMENT_LINES = 60
SECTIONS_PER_LIST = 4  # a list's lines fill at most this many sections (3,000 characters each)
UNCHECKED_EMOJI = ":grey_question:"


def slack_date(moment: datetime) -> str:
    """A time Slack shows in the viewer's zone; the fallback (and the console) reads UTC."""
    stamp = int(moment.timestamp())
    return f"<!date^{stamp}^{{date_short_pretty}} {{time}}|{moment:%Y-%m-%d %H:%M} UTC>"


def digest(blocks: Sequence[Block]) -> str:
    """What a published view is remembered by: equal blocks, equal digest."""
    text = json.dumps(list(blocks), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def home_view(
    state: HomeState, standings: Sequence[Standing], viewer: str, access: Access
) -> list[Block]:
    blocks: list[Block] = [header("EventMesh — what needs attention"), context(_summary(state))]
    blocks += _incidents(state, viewer, access)
    blocks += _approvals(state, viewer, access)
    blocks += _alerts(state.alerts)
    blocks += _environments(state.environments)
    blocks += _on_call(standings)
    blocks.append(
        context(
            "Kept up to date as things change · `/health all` · `/deploy status` · "
            "`/escalate status` · `/oncall`"
        )
    )
    if len(blocks) > MAX_VIEW_BLOCKS:  # the caps above keep far below; never let Slack refuse
        blocks = [*blocks[: MAX_VIEW_BLOCKS - 1], context("… more than a Home tab can show")]
    return blocks


def _summary(state: HomeState) -> str:
    def counted(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    environments = state.environments
    locked = sum(1 for env in environments if env.lock is not None)
    unhealthy = sum(1 for env in environments if env.health is Health.UNHEALTHY)
    return " · ".join(
        [
            f"{counted(len(environments), 'environment')} ({unhealthy} unhealthy, {locked} locked)",
            f"{counted(len(state.incidents), 'open incident')}",
            f"{counted(len(state.alerts), 'firing alert')}",
        ]
    )


def _title(text: str) -> list[Block]:
    return [{"type": "divider"}, section(text)]


# --- incidents ------------------------------------------------------------------------------


def _incidents(state: HomeState, viewer: str, access: Access) -> list[Block]:
    if not state.incidents:
        return _title("*Open incidents* — none")
    blocks = _title(f"*Open incidents* ({len(state.incidents)})")
    for incident in state.incidents[:MAX_INCIDENTS]:
        block = section(_incident_line(incident))
        if may_acknowledge(incident, viewer, state, access):
            # The card's button: same action id, value and block id, so its handler judges
            # the press (and spots one made on an older state of the incident).
            block["block_id"] = actions_block_id(incident)
            block["accessory"] = button(
                "Acknowledge", ACKNOWLEDGE, incident_name(incident.id), style="primary"
            )
        blocks.append(block)
    hidden = len(state.incidents) - MAX_INCIDENTS
    if hidden > 0:
        blocks.append(context(f"… and {hidden} more: `/escalate status` lists them all"))
    return blocks


def _incident_line(incident: Incident) -> str:
    status = Status(incident.status)
    return (
        f"{STATUS_EMOJI[status]} *{incident_name(incident.id)}* · SEV {incident.severity} · "
        f"{escape(cut(incident.summary, 200))}\n"
        f"{status_line(incident, plan_of(incident))} · opened {slack_date(incident.opened_at)}"
    )


# --- approvals ------------------------------------------------------------------------------


def _approvals(state: HomeState, viewer: str, access: Access) -> list[Block]:
    mine = approvals_for(viewer, state, access)
    if not (mine.to_decide or mine.asked):
        return []  # nothing waits for or on this viewer: no section at all
    lines: list[str] = []
    if mine.to_decide:
        lines.append(f"*Waiting for your decision* ({len(mine.to_decide)})")
        lines += [_approval_line(a) for a in mine.to_decide[:MAX_APPROVAL_LINES]]
    if mine.asked:
        lines.append(f"*Your requests, waiting for an approver* ({len(mine.asked)})")
        lines += [_approval_line(a) for a in mine.asked[:MAX_APPROVAL_LINES]]
    return [{"type": "divider"}, *sections_within(lines, SECTIONS_PER_LIST, _more("requests"))]


def _approval_line(approval: Approval) -> str:
    version = approval.payload.get("version")
    what = f" `{escape(str(version))}`" if version else ""
    where = f" · in <#{approval.channel}>" if approval.channel else ""
    return (
        f"• *#{approval.id}* · {escape(approval.kind)} *{escape(approval.environment)}*{what} · "
        f"asked by <@{approval.requested_by}> · expires {slack_date(approval.expires_at)}{where}"
    )


# --- alerts ---------------------------------------------------------------------------------


def _alerts(alerts: Sequence[Alert]) -> list[Block]:
    if not alerts:
        return _title("*Firing alerts* — none")
    lines = [f"*Firing alerts* ({len(alerts)})"]
    lines += [_alert_line(alert) for alert in alerts[:MAX_ALERT_LINES]]
    if len(alerts) > MAX_ALERT_LINES:
        lines.append(f"… and {len(alerts) - MAX_ALERT_LINES} more in the alerts channel")
    return [{"type": "divider"}, *sections_within(lines, SECTIONS_PER_LIST, _more("alerts"))]


def _alert_line(alert: Alert) -> str:
    flapping = alert.status == AlertStatus.FLAPPING.value
    emoji = ":repeat:" if flapping else LEVEL_EMOJI.get(AlertLevel(alert.level), "")
    state = "Flapping" if flapping else alert.level
    acked = f" · acknowledged by <@{alert.acked_by}>" if alert.acked_by else ""
    return (
        f"{emoji} *{state}* · *{escape(scope(alert.environment))}* · "
        f"{Metric(alert.metric).info.title} · since {slack_date(alert.level_since)}{acked}"
    )


# --- environments ---------------------------------------------------------------------------


def _environments(environments: Sequence[EnvironmentState]) -> list[Block]:
    lines = [f"*Environments* ({len(environments)})"]
    shown = list(environments[:MAX_ENVIRONMENT_LINES])
    lines += [_environment_line(env) for env in shown]
    rest = environments[MAX_ENVIRONMENT_LINES:]
    if rest:
        quiet = sum(1 for env in rest if env.quiet)
        others = f", {len(rest) - quiet} more not checked yet" if len(rest) > quiet else ""
        lines.append(
            f"… and {len(rest)} more: {quiet} Healthy with no lock and no alert{others} "
            "(`/health all` checks them all)"
        )
    return [{"type": "divider"}, *sections_within(lines, SECTIONS_PER_LIST, _more("environments"))]


def _environment_line(env: EnvironmentState) -> str:
    if env.health is None:
        line = f"{UNCHECKED_EMOJI} *{escape(env.name)}* — not checked yet"
    else:
        line = f"{HEALTH_EMOJI[env.health]} *{escape(env.name)}* — {env.health.value}"
    if env.version:
        line += f" · `{escape(cut(env.version, 60))}`"
    if env.lock is not None:
        line += f" · :lock: {lock_holder(env.lock)}"
    if env.alerts:
        count = len(env.alerts)
        line += f" · :bell: {count} firing alert{'' if count == 1 else 's'}"
    return line


# --- on call --------------------------------------------------------------------------------


def _on_call(standings: Sequence[Standing]) -> list[Block]:
    if not standings:
        return _title("*On call* — nobody: the config has no escalation levels")
    lines = ["*On call*", *(line for s in standings for line in standing_lines(s))]
    return [{"type": "divider"}, *sections_within(lines, SECTIONS_PER_LIST, _more("lines"))]


def _more(what: str) -> Callable[[int], str]:
    return lambda n: f"… and {n} more {what}"
