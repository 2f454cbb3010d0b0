"""Who may run what: the roles a command or button asks for, and the help line of each usage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.config import Access

Role = Literal["everyone", "deployers", "approvers"]


def may_run(role: Role, access: Access, user_id: str) -> bool:
    if role == "deployers":
        return access.may_deploy(user_id)
    if role == "approvers":
        return access.may_approve(user_id)
    return True


@dataclass(frozen=True)
class Usage:
    """One line of a command's help: its syntax, what it does, and who may run it."""

    syntax: str
    summary: str
    role: Role = "everyone"
