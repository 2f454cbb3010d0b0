"""The App Home end to end: the real bot in HTTP mode, signed events and clicks, the Slack fake.

Opening the Home tab (a signed `app_home_opened` event) publishes the viewer's Home; a change
to what it shows publishes it again, at most once per refresh interval per viewer, whichever
flow made the change; the Acknowledge button on it is the incident card's own. Every wait is
on a condition (a call reaching the fake, a row in the database).
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.runbook.home.home import DEBOUNCE, refresh_interval
from bot.store import Store
from tests.conftest import (
    SIGNING_SECRET,
    BotProcess,
    DemoService,
    free_port,
    http_bot,
    new_channel,
    write_config,
)
from tests.support.incident_messages import shown
from tests.support.slack_fake import MAX_VIEW_BLOCKS, SlackFake, block_kit_errors
from tests.support.slack_signing import (
    JSON_CONTENT_TYPE,
    app_home_opened_event,
    event_callback_body,
    home_block_actions_body,
    signed_headers,
)
from tests.test_console import PROMPT, left, plain, spawn_console
from tests.test_oncall_e2e import wait_in_store

TAG = uuid.uuid4().hex[:6].upper()  # this module's people: the session's fake is shared
ONCALL = f"U0ONCALL{TAG}"
APPROVER = f"U0APPROVER{TAG}"
DEPLOYER = f"U0DEPLOY{TAG}"
ENVIRONMENTS = ("local", "dev", "staging", "production")
WAIT_S = 30.0  # generous: the machine is shared
BURST_WAIT_S = 90.0  # 50 viewers wait refresh_interval(50) = 30 s between publishes


@dataclass
class HomeBot:
    bot: BotProcess

    @property
    def slack(self) -> SlackFake:
        return self.bot.slack

    def open_home(self, user_id: str, view: dict[str, Any] | None = None) -> None:
        """The user opens the Home tab, as Slack tells the bot: a signed event_callback."""
        body = event_callback_body(app_home_opened_event(user_id, view=view))
        headers = signed_headers(SIGNING_SECRET, body, content_type=JSON_CONTENT_TYPE)
        response, _ = self.bot.post_signed(body, headers)
        assert response.status_code == 200, response.text

    def press_on_home(self, user_id: str, block: dict[str, Any]) -> None:
        """Click the button beside a section of the user's Home (its accessory)."""
        view = self.slack.home(user_id)
        assert view is not None
        button = block["accessory"]
        body = home_block_actions_body(
            button["action_id"],
            button["value"],
            user_id=user_id,
            block_id=block["block_id"],
            view=view,
        )
        response, _ = self.bot.post_signed(body, signed_headers(SIGNING_SECRET, body))
        assert response.status_code == 200, response.text

    def command(self, command: str, text: str, user_id: str) -> None:
        sent = self.bot.command(command, text, user_id=user_id, channel=new_channel())
        assert sent.response.status_code == 200, sent.response.text

    def wait_home(
        self, user_id: str, check: Callable[[str], bool], timeout: float = WAIT_S
    ) -> dict[str, Any]:
        """The user's Home as Slack shows it, once its text passes `check`."""
        return self.slack.wait_for(
            lambda fake: view if (view := fake.home(user_id)) and check(text_of(view)) else None,
            timeout=timeout,
        )

    def audited_opens(self, user_id: str) -> list[str]:
        """The results of the user's finished app_home_opened events, oldest first."""
        store = Store(self.bot.database_url)
        try:
            entries = store.audit_entries(1000)
        finally:
            store.close()
        return [
            e.result
            for e in reversed(entries)
            if e.command == "app_home_opened" and e.user_id == user_id and e.finished_at
        ]


def text_of(view: dict[str, Any]) -> str:
    return shown(view)


def incident_blocks(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in view["blocks"] if str(b.get("block_id", "")).startswith("incident:")]


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory,
    slack: SlackFake,
    demo_services: tuple[DemoService, ...],
    dead_url: str,
) -> Iterator[HomeBot]:
    """A bot of this module's own: its Home shows only this module's incidents and locks."""
    a, b = demo_services
    tmp = tmp_path_factory.mktemp("home-bot")
    config = write_config(
        tmp / "eventmesh.yml",
        {"local": a.url, "dev": b.url, "staging": a.url, "production": dead_url},
        access={"deployers": [DEPLOYER], "approvers": [APPROVER]},
        escalation={"levels": [{"name": "On-call DevOps Engineer", "users": [ONCALL]}]},
    )
    with http_bot(tmp, slack, config) as bot:
        yield HomeBot(bot)


def test_opening_the_home_publishes_it_once_naming_every_environment_and_incident(
    home: HomeBot,
) -> None:
    viewer = f"U0VIEWER{TAG}"
    pages_before = len(home.slack.channel_messages("D" + ONCALL[1:]))  # the session's fake
    home.command("/health", "all", viewer)  # the environments' classes and versions, recorded
    home.command("/escalate", "checkout answers 500 --sev 1", viewer)
    # Everything in place before the Home is opened: the checks kept, the incident paged.
    wait_in_store(home.bot.database_url, lambda store: store.health_check_count() >= 4)
    home.slack.wait_for(
        lambda fake: fake.channel_messages("D" + ONCALL[1:])[pages_before:], timeout=WAIT_S
    )

    home.open_home(viewer)
    wait_in_store(home.bot.database_url, lambda store: home.audited_opens(viewer))
    (publish,) = home.slack.home_publishes(viewer)
    view = publish.args["view"]
    assert view["type"] == "home"
    assert block_kit_errors(view["blocks"], MAX_VIEW_BLOCKS) == []
    text = text_of(view)
    for name in ENVIRONMENTS:
        assert f"*{name}* — " in text, name
    assert "checkout answers 500" in text and "*INC-" in text
    assert "*production* — Unhealthy" in text  # nothing listens there
    assert "*staging* — Healthy" in text
    # Nobody but the on-call engineer and approvers may acknowledge: no button for this viewer.
    assert not any("accessory" in b for b in incident_blocks(view))

    # Opened again with that view still shown (Slack sends it in the event): nothing to publish.
    home.open_home(viewer, view=home.slack.home(viewer))
    wait_in_store(home.bot.database_url, lambda store: len(home.audited_opens(viewer)) == 2)
    assert home.audited_opens(viewer)[-1] == "Home shown is current"
    assert len(home.slack.home_publishes(viewer)) == 1


def test_acknowledge_on_the_home_acknowledges_the_incident_and_the_home_follows(
    home: HomeBot,
) -> None:
    home.command("/escalate", "queue backlog growing --sev 2", f"U0OPENER{TAG}")
    home.open_home(ONCALL)
    view = home.wait_home(ONCALL, lambda text: "queue backlog growing" in text)
    (block,) = [b for b in incident_blocks(view) if "queue backlog growing" in b["text"]["text"]]
    # The incident card's own button: its action id, value and block id scheme.
    assert block["accessory"]["action_id"] == "incident_ack"
    assert block["accessory"]["value"].startswith("INC-")
    assert block["block_id"] == f"incident:{block['accessory']['value']}:1"
    name = block["accessory"]["value"]

    before = len(home.slack.home_publishes(ONCALL))
    home.press_on_home(ONCALL, block)
    acked = home.wait_home(ONCALL, lambda text: f"acknowledged by <@{ONCALL}>" in text)
    assert len(home.slack.home_publishes(ONCALL)) == before + 1
    (after,) = [b for b in incident_blocks(acked) if name in b.get("block_id", "")] or [None]
    assert after is None  # an acknowledged incident has no Acknowledge button
    # The existing handler did it: the incident's card says so too.
    home.slack.wait_for(
        lambda fake: any(
            f"{name} · SEV 2 · Acknowledged" in shown(m)
            for (channel, _), m in fake.messages.items()
            if channel.startswith("C")
        ),
        timeout=WAIT_S,
    )


def test_a_burst_of_changes_refreshes_a_home_at_once_then_once_more_after_the_debounce(
    home: HomeBot,
) -> None:
    viewer = f"U0DEBOUNCE{TAG}"
    home.open_home(viewer)
    home.wait_home(viewer, lambda text: "*Environments*" in text)
    home.command("/escalate", f"first of a burst {TAG}", f"U0OPENER{TAG}")
    home.wait_home(viewer, lambda text: "first of a burst" in text)
    first = len(home.slack.home_publishes(viewer))

    started = time.monotonic()
    rest = [f"follow-up {n} {TAG}" for n in range(5)]
    for summary in rest:
        home.command("/escalate", summary, f"U0OPENER{TAG}")
    home.command("/deploy", "lock local a quick freeze", DEPLOYER)
    home.wait_home(viewer, lambda text: all(s in text for s in rest) and ":lock:" in text)
    ended = time.monotonic()
    calls = home.slack.home_publishes(viewer)
    later = calls[first:]
    # The first change went out at once; what came within the debounce waited for it to pass
    # and went out together (or, on a slow machine, in as many publishes as it took intervals).
    assert 1 <= len(later) <= (ended - started) / DEBOUNCE.total_seconds() + 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls[first - 1 :])]
    assert all(gap >= DEBOUNCE.total_seconds() - 1 for gap in gaps), gaps
    home.command("/deploy", "unlock local", DEPLOYER)
    print(  # the numbers for the report: pytest -s shows them
        f"debounce: {len(rest) + 1} changes in {ended - started:.1f}s; {len(later)} publish(es) "
        f"after the first change's, {', '.join(f'{g:.1f}s' for g in gaps)} apart"
    )


def test_fifty_viewers_and_a_burst_of_changes_stay_within_the_refresh_interval(
    home: HomeBot,
) -> None:
    viewers = [f"U0V{n:02d}{TAG}" for n in range(50)]
    for viewer in viewers:
        home.open_home(viewer)
    home.slack.wait_for(lambda fake: all(fake.home(v) for v in viewers), timeout=BURST_WAIT_S)

    before = re.search(r"\*Open incidents\* \((\d+)\)", text_of(home.slack.home(viewers[0]) or {}))
    open_before = int(before[1]) if before else 0
    started = time.monotonic()
    summaries = [f"burst incident {n:02d} {TAG}" for n in range(20)]
    for summary in summaries:
        home.command("/escalate", summary, f"U0OPENER{TAG}")
    home.command("/deploy", "lock staging freeze for the burst", DEPLOYER)
    home.command("/deploy", "lock dev freeze for the burst", DEPLOYER)

    def final(text: str) -> bool:
        incidents = f"*Open incidents* ({open_before + len(summaries)})"
        return incidents in text and text.count(":lock:") >= 2

    for viewer in viewers:
        home.wait_home(viewer, final, timeout=BURST_WAIT_S)
    ended = time.monotonic()

    interval = refresh_interval(len(viewers)).total_seconds()
    allowed = (ended - started) / DEBOUNCE.total_seconds() + 1
    counts = []
    for viewer in viewers:
        during = [c for c in home.slack.home_publishes(viewer) if started <= c.at <= ended]
        counts.append(len(during))
        assert 1 <= len(during) <= allowed, (viewer, len(during), allowed)
        # Never two publishes to one viewer closer than the interval (a second's slack for the
        # HTTP calls' own timing): 50 viewers together stay within views.publish's Tier 4.
        gaps = [b.at - a.at for a, b in itertools.pairwise(during)]
        assert all(gap >= interval - 1 for gap in gaps), (viewer, gaps)
    final_views = [home.slack.home(v) for v in viewers]
    assert all(v and block_kit_errors(v["blocks"], MAX_VIEW_BLOCKS) == [] for v in final_views)
    print(  # the numbers for the report: pytest -s shows them
        f"burst of {len(summaries)} incidents and 2 locks: {ended - started:.1f}s until every "
        f"viewer's Home showed it; publishes per viewer {min(counts)}..{max(counts)} "
        f"(allowed {allowed:.1f}, interval {interval:.0f}s), total {sum(counts)}"
    )


def test_the_console_prints_the_home_and_its_acknowledge_button_works(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "eventmesh.yml",
        {"local": "http://127.0.0.1:9", "staging": "http://127.0.0.1:9"},
        access={"approvers": ["U0APPROVER1"], "deployers": ["U0DEPLOY1"]},
        escalation={"levels": [{"name": "On-call", "users": ["U0ONCALL"]}]},
    )
    child = spawn_console(tmp_path, EVENTMESH_CONFIG=str(config), PORT=str(free_port()))
    child.sendline("/escalate queue consumers stuck")
    child.expect_exact("→ DM @U0ONCALL")
    child.expect_exact(f"UCONSOLE {PROMPT}")
    child.sendline("as U0DEPLOY1 /deploy lock staging a freeze")
    child.expect_exact(f"UCONSOLE {PROMPT}")

    def home_of(user: str) -> str:
        """`/home` as `user` sees it: the screen between its heading and the next prompt."""
        child.sendline(f"as {user} /home")
        child.expect_exact(f"→ Home of @{user}")
        child.expect_exact(f"UCONSOLE {PROMPT}")
        return plain(child.before)

    screen = home_of("UCONSOLE")
    assert "EventMesh — what needs attention" in screen
    assert "INC-1 · SEV 2 · queue consumers stuck" in screen
    assert "local — not checked yet" in screen
    assert "staging — not checked yet · 🔒 held by hand by @U0DEPLOY1" in screen
    assert re.search(r"\[\d+\] Acknowledge", screen) is None  # not theirs to press

    button = re.search(r"\[(\d+)\] Acknowledge", home_of("U0ONCALL"))
    assert button is not None
    child.sendline(f"as U0ONCALL {button[1]}")  # the incident card's own handler takes it
    child.expect_exact("Acknowledged by @U0ONCALL")
    child.expect_exact(f"UCONSOLE {PROMPT}")
    screen = home_of("U0ONCALL")
    assert "acknowledged by @U0ONCALL" in screen
    assert re.search(r"\[\d+\] Acknowledge", screen) is None
    child.sendline("exit")
    left(child)
