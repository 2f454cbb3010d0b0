"""Block Kit for approval requests: the request in the approvals channel (Approve / Reject,
then the decision in place of the buttons), and what the requester is told."""

from __future__ import annotations

from collections.abc import Sequence

from bot.runbook.changes.activate import show_version
from bot.runbook.changes.checklist import ChecklistItem
from bot.runbook.changes.deploy_request import PinnedPackage
from bot.slack import blocks
from bot.slack.blocks import Block, button, context, escape, header, message, section
from bot.slack.changes.change_blocks import when
from bot.slack.chat import Message
from bot.store import Approval

APPROVE = "approval_approve"
REJECT = "approval_reject"
CHECK_EMOJI = {"passed": ":white_check_mark:", "failed": ":x:", "confirm": ":white_small_square:"}


def request(
    approval: Approval,
    *,
    version: str,
    flags: Sequence[str],
    hosts: Sequence[str],
    checklist: Sequence[ChecklistItem],
    plan: Sequence[str],
    timeout_text: str,
    target: str = "",
    package: PinnedPackage | None = None,
) -> Message:
    """A deploy's request shows the Pre-Deployment Checklist; a rollback's (`target` says what
    it goes back to) shows its plan host by host."""
    env = approval.environment
    shown_hosts = ", ".join(f"`{escape(h)}`" for h in hosts[:10]) + (
        f" and {len(hosts) - 10} more" if len(hosts) > 10 else ""
    )
    if approval.kind == "rollback":
        to = show_version(version) if version else target
        what = f"roll back {env} to {to}"
        intro = (
            f"<@{approval.requested_by}> asks to roll back *{env}* to *{escape(target or to)}*."
            f"\nHosts: {shown_hosts}"
        )
        checklist_title = "*What each host runs, and what it goes back to*"
    elif approval.kind == "restart":
        what = f"restart the service on {env}"
        intro = f"<@{approval.requested_by}> asks to restart the service on *{env}*.\nHosts: "
        intro += shown_hosts
        checklist_title = "*How*"
    else:
        what = f"{approval.kind} {show_version(version)} to {env}"
        options = " ".join(f"`{f}`" for f in flags) or "none"
        intro = (
            f"<@{approval.requested_by}> asks to {approval.kind} "
            f"*{escape(show_version(version))}* to *{env}*.\nOptions: {options} · hosts: "
            + shown_hosts
        )
        checklist_title = "*Pre-Deployment Checklist* (runbook)"
    shown: list[Block] = [header(f"Approval needed: {what}"), section(intro)]
    if package is not None:
        shown.append(section(_artifact(package)))
    if plan:
        shown.append(section("*Plan:* " + escape(" → ".join(plan))))
    lines = [checklist_title]
    for item in checklist:
        entry = f"{CHECK_EMOJI[item.state]} {escape(item.label)}"
        if item.state == "confirm":
            entry += " — _for the approver to confirm by approving_"
            if item.detail:
                entry += f" ({escape(item.detail)})"
        elif item.detail:
            entry += f" — {escape(item.detail)}"
        lines.append(entry)
    shown.extend(blocks.sections_for_lines(lines))
    shown.append(_footer(approval, timeout_text))
    shown.append(_decision(approval, timeout_text))
    return message(f"Approval needed: {what}, asked by <@{approval.requested_by}>", shown)


def _artifact(package: PinnedPackage) -> str:
    """What exactly is approved: the package built (and tested) for this request."""
    commit = f"`{escape(package.commit)}`" if package.commit else "_workdir is not a git checkout_"
    how = "the CI run's artifact" if package.source == "ci" else "built and tested by the bot"
    lines = [
        f"*Package:* `{escape(package.path.name)}` ({how})",
        f"*sha256:* `{escape(package.sha256)}`",
        f"*Commit:* {commit}",
    ]
    if package.ci_run:
        lines.append(f"*CI run:* {escape(package.ci_run)}")
    lines.append("_Approving deploys exactly this package; its sha256 is checked on every host._")
    return "\n".join(lines)


def _decision(approval: Approval, timeout_text: str) -> Block:
    if approval.state == "pending":
        return {
            "type": "actions",
            "block_id": f"approval_{approval.id}",
            "elements": [
                button("Approve", APPROVE, str(approval.id), "primary"),
                button("Reject", REJECT, str(approval.id), "danger"),
            ],
        }
    at = when(approval.decided_at) if approval.decided_at else ""
    if approval.state == "approved":
        return section(f":white_check_mark: *Approved* by <@{approval.decided_by}> at {at}")
    if approval.state == "rejected":
        return section(f":no_entry: *Rejected* by <@{approval.decided_by}> at {at}")
    return section(f":hourglass: *Expired* at {at}: nobody decided within {timeout_text}")


def _footer(approval: Approval, timeout_text: str) -> Block:
    return context(
        f"request #{approval.id} · expires {when(approval.expires_at)} ({timeout_text}) · "
        "only an approver other than the requester can decide"
    )


def asked(approval: Approval, channel: str | None, timeout_text: str) -> Message:
    where = f"<#{channel}>" if channel else "this channel"
    text = (
        f":hourglass_flowing_sand: Approval requested in {where} (request #{approval.id}); "
        f"it expires in {timeout_text}. The {approval.kind} starts when an approver approves."
    )
    return message(text, [section(text)])


def told(approval: Approval, what: str) -> Message:
    state = approval.state
    by = f" by <@{approval.decided_by}>" if approval.decided_by else ""
    text = {
        "approved": f":white_check_mark: Your request #{approval.id} ({what}) was approved{by}: "
        "it starts now.",
        "rejected": f":no_entry: Your request #{approval.id} ({what}) was rejected{by}.",
        "expired": f":hourglass: Your request #{approval.id} ({what}) expired: no approver "
        "decided in time. Ask again with the same command.",
    }.get(state, f"Your request #{approval.id} is {state}.")
    return message(text, [section(text)])


def refused(reason: str) -> Message:
    return message(reason, [section(f":no_entry: {reason}")])
