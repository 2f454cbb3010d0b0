"""On-call in process: the real store (SQLite and PostgreSQL), scheduler, incidents and the Web
API chat against the Slack fake, on a clock the test moves — rotations paging the right person
each day, overrides moving the next page, hand-off messages across a restart, /oncall's words.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config, check_config, load_config
from bot.runbook.incidents.escalation import DEADLINE_TIMER, SYNC_TIMER, Action
from bot.runbook.oncall.handoffs import HANDOFF_TIMER
from bot.scheduler import Scheduler
from bot.slack.incidents.incidents import Incidents
from bot.slack.oncall.oncall import OnCallDesk, OverrideRequest, Refused
from bot.slack.web_api import SlackChat, create_web_client
from bot.store import Incident, Store
from bot.store.oncall import OnCallStore
from handlers.oncall import Cancel, Show, Swap, parse
from tests.conftest import BOT_TOKEN, new_channel
from tests.support.clock import ManualClock
from tests.support.incident_messages import shown
from tests.support.slack_fake import SlackFake, block_kit_errors
from tests.test_config import EXAMPLE_TEXT, write

A, B, C = "U0ALICE", "U0BOB", "U0CAROL"
OLGA, LEAD, APPROVER, DEPLOYER = "U0OLGA", "U0LEAD", "U0APPROVER", "U0DEPLOYER"
ONCALL_LEVEL = "On-call DevOps Engineer"


def dm(user: str) -> str:
    return "D" + user[1:]


def config(
    rotation: dict[str, Any], *, lead: bool = True, repeat_every: str = "1h", channel: str = ""
) -> Config:
    levels: list[dict[str, Any]] = [{"name": ONCALL_LEVEL, "rotation": rotation}]
    if lead:
        levels[0]["timeout"] = "10m"
        levels.append({"name": "DevOps Team Lead", "users": [LEAD]})
    return Config.model_validate(
        {
            "slack": {"incidents_channel": channel or new_channel()},
            "access": {"approvers": [APPROVER], "deployers": [DEPLOYER]},
            "environments": {"local": {"base_url": "http://127.0.0.1:1", "transport": "local"}},
            "alerts": {"repeat_every": repeat_every, "scheduled_checks": False},
            "escalation": {"levels": levels},
        }
    )


class Bot:
    """One bot process's share of on-call and incidents, on a shared store and clock."""

    def __init__(self, world: World, name: str) -> None:
        self.scheduler = Scheduler(world.store, clock=world.clock, owner=name)
        self.incidents = Incidents(
            world.config, world.store, world.chat, self.scheduler, clock=world.clock
        )
        self.desk = OnCallDesk(
            world.config, world.store, world.chat, self.scheduler, clock=world.clock
        )
        self.scheduler.on(DEADLINE_TIMER, self.incidents.on_deadline_timer)
        self.scheduler.on(SYNC_TIMER, self.incidents.on_sync_timer)
        self.scheduler.on(HANDOFF_TIMER, self.desk.on_handoff_timer)

    async def start(self) -> None:
        """What a bot does as it starts: set the hand-off timers, then sweep."""
        await self.desk.plan_handoffs()
        await self.settle()

    async def settle(self) -> None:
        while await self.scheduler.sweep():
            await self.scheduler.settle()


class World:
    def __init__(self, tmp_path: Path, slack: SlackFake, config: Config) -> None:
        self.slack = slack
        self.config = config
        self.clock = ManualClock(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
        self.store = Store(f"sqlite:///{tmp_path / 'bot.db'}", clock=self.clock)
        self.chat = SlackChat(create_web_client(BOT_TOKEN, slack.api_url))
        self.bot = Bot(self, "bot-1")

    @property
    def channel(self) -> str:
        assert self.config.slack.incidents_channel is not None
        return self.config.slack.incidents_channel

    async def open(self, summary: str = "api 5xx spike") -> Incident:
        incident, created = await self.bot.incidents.open_incident(summary, 2, "/escalate")
        assert created
        await self.bot.settle()
        return incident

    async def later(self, **delta: float) -> None:
        self.clock.advance(**delta)
        await self.bot.settle()

    def pages(self, user: str) -> list[str]:
        """The pages posted to a user (as first sent: copies are updated in place later)."""
        return [
            str(call.args["text"])
            for call in self.slack.calls_to("chat.postMessage")
            if call.args.get("channel") == dm(user)
            and call.error is None
            and str(call.args.get("text", "")).startswith("Paging you")
        ]

    def dms(self, user: str) -> list[str]:
        return [shown(m) for m in self.slack.channel_messages(dm(user))]

    def lines(self) -> list[str]:
        return [
            m["text"] for m in self.slack.channel_messages(self.channel) if "thread_ts" not in m
        ]


def scenario(
    tmp_path: Path, slack: SlackFake, config: Config, body: Callable[[World], Awaitable[None]]
) -> None:
    slack.reset()

    async def run() -> None:
        world = World(tmp_path, slack, config)
        try:
            await body(world)
        finally:
            world.store.close()

    asyncio.run(run())
    assert slack.rejected == []


PLUS_ONE = datetime.fromisoformat("2026-12-07T09:00:00+01:00").tzinfo
DAILY = {"members": [A, B, C], "every": "1d", "handoff": "2026-11-23T09:00:00+01:00"}
DAILY_BERLIN = {**DAILY, "handoff_zone": "Europe/Berlin"}


# --- the config ---------------------------------------------------------------------------

FIRST_LEVEL = "    - {name: On-call DevOps Engineer, users: [U0ONCALL], timeout: 10m}\n"


def with_first_level(text: str) -> str:
    assert FIRST_LEVEL in EXAMPLE_TEXT
    return EXAMPLE_TEXT.replace(FIRST_LEVEL, text, 1)


def test_the_examples_commented_rotation_loads_when_uncommented(tmp_path: Path) -> None:
    start = EXAMPLE_TEXT.index("    # - name: On-call DevOps Engineer")
    block = EXAMPLE_TEXT[start:].split("\n\n", 1)[0]
    uncommented = "".join(
        line.replace("# ", "", 1) + "\n" for line in block.splitlines() if line.strip()
    )
    level = load_config(write(tmp_path, with_first_level(uncommented))).escalation.levels[0]
    assert level.users == [] and level.timeout == timedelta(minutes=10)
    assert level.rotation is not None
    assert level.rotation.members == ["U0ALICE", "U0BOB", "U0CAROL"]
    assert level.rotation.every == timedelta(weeks=1)
    assert level.rotation.handoff_time == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    assert level.rotation.handoff_zone == "Europe/Berlin"


def rotation_level(rotation: str, users: str = "") -> str:
    return (
        f"    - {{name: On-call DevOps Engineer, {users}rotation: {{{rotation}}}, timeout: 10m}}\n"
    )


ROTATION = "members: [U0A, U0B], every: 1w, handoff: 2026-12-07T09:00:00+01:00"
BROKEN_ROTATIONS = {
    "unknown zone": (
        f"{ROTATION}, handoff_zone: Europe/Berln",
        "rotation.handoff_zone",
        "'Europe/Berln' is not a time zone (an IANA name such as Europe/Berlin or UTC)",
    ),
    "empty members": (
        "members: [], every: 1w, handoff: 2026-12-07T09:00:00+01:00",
        "rotation.members",
        "must not be empty",
    ),
    "a member as a Slack mention": (
        "members: ['<@U0ALICE>'], every: 1w, handoff: 2026-12-07T09:00:00+01:00",
        "rotation.members[0]",
        "'<@U0ALICE>' is not a Slack user id like U012AB3CD, an @handle or an email",
    ),
    "hand-off not a time": (
        "members: [U0A], every: 1w, handoff: next monday",
        "rotation.handoff",
        "'next monday' is not an ISO 8601 date and time like 2026-12-07T09:00:00+01:00",
    ),
    "hand-off a date": (
        "members: [U0A], every: 1w, handoff: 2026-12-07",
        "rotation.handoff",
        "(it needs the time of day)",
    ),
    "hand-off without offset or zone": (
        "members: [U0A], every: 1w, handoff: '2026-12-07 09:00'",
        "rotation.handoff",
        "'2026-12-07T09:00:00' has no UTC offset: add one (+01:00), or name the zone in "
        "handoff_zone",
    ),
    "hand-off offset not the zone's": (
        f"{ROTATION.replace('+01:00', '+02:00')}, handoff_zone: Europe/Berlin",
        "rotation.handoff",
        "is 08:00 in Europe/Berlin, whose offset then is +01:00",
    ),
    "every not whole days": (
        ROTATION.replace("1w", "36h"),
        "rotation.every",
        "'36h' is not a whole number of days (use 1d, 1w, 2w)",
    ),
    "every not a duration": (
        ROTATION.replace("1w", "weekly"),
        "rotation.every",
        "'weekly' is not a duration (use 1d, 1w, 2w)",
    ),
    "every missing": (
        "members: [U0A], handoff: 2026-12-07T09:00:00+01:00",
        "rotation.every",
        "required key is missing",
    ),
    "unknown key": (
        f"{ROTATION}, zone: UTC",
        "rotation.zone",
        "unknown key (expected one of: members, every, handoff, handoff_zone)",
    ),
}


@pytest.mark.parametrize(
    ("rotation", "key", "problem"), BROKEN_ROTATIONS.values(), ids=BROKEN_ROTATIONS.keys()
)
def test_a_broken_rotation_gets_one_line_naming_its_key(
    tmp_path: Path, rotation: str, key: str, problem: str
) -> None:
    path = write(tmp_path, with_first_level(rotation_level(rotation)))
    ok, lines = check_config(path)
    assert not ok
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: escalation.levels[0].{key}: "), lines[0]
    assert problem in lines[0]


def test_a_level_needs_users_or_a_rotation_and_names_differ(tmp_path: Path) -> None:
    nobody = "    - {name: On-call DevOps Engineer, timeout: 10m}\n"
    ok, lines = check_config(write(tmp_path, with_first_level(nobody)))
    assert lines == [
        f"{tmp_path / 'eventmesh.yml'}: escalation.levels[0].users: required key is missing "
        "(give users, a rotation, or both)"
    ]
    both = rotation_level(ROTATION, users="users: [U0WATCH], ")
    level = load_config(write(tmp_path, with_first_level(both))).escalation.levels[0]
    assert level.users == ["U0WATCH"] and level.rotation is not None
    twice = "    - {name: cto, users: [U0ONCALL], timeout: 10m}\n"
    ok, lines = check_config(write(tmp_path, with_first_level(twice)))
    assert not ok
    assert lines[0].endswith("escalation.levels[3].name: 'CTO' is the name of level 1 already")


# --- paging ---------------------------------------------------------------------------------


def test_a_level_of_three_members_pages_the_right_one_on_each_day(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        # Turns change at 09:00 Berlin (08:00 UTC): A on the 23rd, B on the 24th, …
        expected = [B, C, A, B, C, A]  # 27 Nov … 2 Dec at 12:00 UTC
        for day, member in enumerate(expected):
            incident = await w.open(f"day {day}")
            assert [u for u in (A, B, C) if f"INC-{incident.id} " in "".join(w.pages(u))] == [
                member
            ], f"day {day}"
            await w.bot.incidents.press(Action.RESOLVE, f"INC-{incident.id}", None, APPROVER)
            await w.later(days=1)
        # Half a minute before a hand-off (09:00 CET) the turn is still the day's; at it, the
        # next one's.
        w.clock.now = datetime(2026, 12, 3, 7, 59, 30, tzinfo=UTC)
        early = await w.open("before nine")
        assert f"INC-{early.id} " in "".join(w.pages(A))
        w.clock.now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
        on_time = await w.open("at nine")
        assert f"INC-{on_time.id} " in "".join(w.pages(B))

    scenario(tmp_path, slack, config(DAILY_BERLIN), body)


def test_an_override_moves_the_next_page_and_its_user_may_press(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        incident = await w.open()
        assert len(w.pages(B)) == 1  # B's turn (27 Nov)
        desk = w.bot.desk
        # C is not on call and holds no role: refused, with the reason.
        refused = await desk.check_override(
            C, OLGA, level_number=None, length=None, until=None, privileged=False
        )
        assert isinstance(refused, Refused)
        assert refused.reason == (
            "Only whoever is on call for level 1, On-call DevOps Engineer now (<@U0BOB>), "
            "deployers and approvers may override it."
        )
        wanted = await desk.check_override(
            B, OLGA, level_number=1, length=timedelta(hours=8), until=None, privileged=False
        )
        assert isinstance(wanted, OverrideRequest)
        answer = await desk.override(wanted, B)
        assert "<@U0OLGA> is on call for level 1, On-call DevOps Engineer instead of <@U0BOB>" in (
            answer.text
        )
        assert "until Fri 27 Nov 21:00 UTC+01:00" in answer.text
        assert "put you on call for level 1" in w.dms(OLGA)[0]
        # The next page of level 1 (its last level repeats every hour) goes to Olga.
        await w.later(hours=1)
        assert len(w.pages(OLGA)) == 1 and len(w.pages(B)) == 1
        # Olga was paged through the override, so her Acknowledge counts; Alice's does not.
        denied = await w.bot.incidents.press(Action.ACKNOWLEDGE, "INC-1", None, A)
        assert denied.denied
        done = await w.bot.incidents.press(Action.ACKNOWLEDGE, "INC-1", None, OLGA)
        assert not done.denied and "(now acknowledged)" in done.result
        assert incident.id == 1

    scenario(tmp_path, slack, config(DAILY, lead=False), body)


def test_cancelling_an_override_gives_the_turn_back(tmp_path: Path, slack: SlackFake) -> None:
    async def body(w: World) -> None:
        desk, level = w.bot.desk, desk_level(w)
        wanted = await desk.check_override(
            DEPLOYER, OLGA, level_number=None, length=None, until=None, privileged=True
        )
        assert isinstance(wanted, OverrideRequest) and wanted.ends_at is None
        await desk.override(wanted, DEPLOYER)
        now = w.clock()
        assert await desk.on_call.on_call(level, now) == (OLGA,)
        # By default it lasts until the level's next hand-off (28 Nov 09:00 CET).
        (made,) = await desk.on_call.overrides_from(now)
        assert made.ends_at == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
        assert "no override" in (await desk.cancel(A, None)).text  # not Alice's
        cancelled = await desk.cancel(OLGA, None)  # the person it put on call
        assert shown_blocks(cancelled.blocks).splitlines()[1:] == [
            ":wastebasket: Ended now (the rotation has those turns again):",
            "• <@U0OLGA> on call for level 1, On-call DevOps Engineer (set by <@U0DEPLOYER>)",
        ]
        assert await desk.on_call.on_call(level, w.clock()) == (B,)
        assert await desk.on_call.overrides_from(w.clock()) == []

    scenario(tmp_path, slack, config(DAILY_BERLIN), body)


def test_times_without_a_zone_are_read_in_the_levels_zone(tmp_path: Path, slack: SlackFake) -> None:
    async def body(w: World) -> None:
        desk = w.bot.desk
        naive = datetime(2026, 11, 28, 9, 0)
        wanted = await desk.check_override(
            B, OLGA, level_number=1, length=None, until=naive, privileged=False
        )
        assert isinstance(wanted, OverrideRequest) and wanted.zone_assumed
        assert wanted.ends_at == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
        answer = await desk.override(wanted, B)
        assert "until Sat 28 Nov 09:00 CET" in answer.text
        assert "has no zone, so it was read as Sat 28 Nov 09:00 CET" in answer.text
        for until, problem in [
            (datetime(2026, 11, 27, 9, 0), "has passed"),
            (datetime(2027, 6, 1, 9, 0), "at most 90 days"),
        ]:
            said = await desk.check_override(  # Olga is on call now: she may
                OLGA, C, level_number=1, length=None, until=until, privileged=False
            )
            assert isinstance(said, str) and problem in said
        lead = await desk.check_override(
            B, OLGA, level_number=2, length=None, until=None, privileged=True
        )
        assert lead == (
            "Level 2, DevOps Team Lead, has no rotation: its users are fixed in the config. "
            "Levels with one: 1."
        )

    scenario(tmp_path, slack, config(DAILY_BERLIN), body)


def desk_level(w: World) -> Any:
    return w.bot.desk.levels()[0]


def shown_blocks(blocks: list[dict[str, Any]]) -> str:
    return shown({"blocks": blocks})


# --- /oncall's answers -----------------------------------------------------------------------


def test_oncall_shows_each_level_now_the_next_hand_offs_and_overrides(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        desk = w.bot.desk
        text = shown_blocks((await desk.overview()).blocks)
        assert "*1 · On-call DevOps Engineer* — <@U0BOB> until Sat 28 Nov 09:00 CET" in text
        assert "Next hand-offs: Sat 28 Nov 09:00 CET → <@U0CAROL> · Sun 29 Nov 09:00 CET → " in (
            text
        )
        assert "*2 · DevOps Team Lead* — <@U0LEAD> (fixed users, no rotation)" in text
        assert "No overrides in effect." in text
        wanted = await desk.check_override(
            B, OLGA, level_number=1, length=timedelta(hours=30), until=None, privileged=False
        )
        assert isinstance(wanted, OverrideRequest)
        await desk.override(wanted, B)
        overview = await desk.overview()
        assert block_kit_errors(overview.blocks) == []
        text = shown_blocks(overview.blocks)
        # The override outlasts the next hand-off: Olga holds it, then Alice's turn comes.
        assert "— <@U0OLGA> (override) until Sat 28 Nov 19:00 CET" in text
        assert "Sat 28 Nov 09:00 CET → <@U0OLGA> · Sun 29 Nov 09:00 CET → <@U0ALICE>" in text
        assert (
            "• <@U0OLGA> on call for level 1, On-call DevOps Engineer until Sat 28 Nov 19:00 CET "
            "(set by <@U0BOB>)" in text
        )
        weeks = await desk.schedule(1, desk_level(w))
        assert block_kit_errors(weeks.blocks) == []
        lines = shown_blocks(weeks.blocks).splitlines()
        assert (
            "• Fri 27 Nov 13:00 CET → Sat 28 Nov 19:00 CET: <@U0OLGA> — override by <@U0BOB>"
            in (lines)
        )
        assert "• Sat 28 Nov 19:00 CET → Sun 29 Nov 09:00 CET: <@U0CAROL>" in lines
        shown_shifts = [line for line in lines if line.startswith("• ")]
        # Olga's, Carol's rest of the 28th, then a turn a day from the 29th to the 25th of
        # December: 4 weeks from now.
        assert len(shown_shifts) == 29
        assert shown_shifts[-1] == "• Fri 25 Dec 09:00 CET → …: <@U0CAROL>"
        fixed = await desk.schedule(2, desk.levels()[1])
        assert "has no rotation: it pages <@U0LEAD> every time" in fixed.text
        assert desk.find_level("devops team lead") == (2, desk.levels()[1])
        assert "the levels are: 1 On-call DevOps Engineer, 2 DevOps Team Lead" in str(
            desk.find_level("7")
        )

    scenario(tmp_path, slack, config(DAILY_BERLIN), body)


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("", Show(None)),
        ("2", Show("2")),
        ("DevOps Team Lead", Show("DevOps Team Lead")),
        ("override <@U0OLGA|olga>", Swap(OLGA, None, None, None)),
        ("override <@U0OLGA> for 8h", Swap(OLGA, None, timedelta(hours=8), None)),
        ("override U0OLGA for 8h level 2", Swap(OLGA, 2, timedelta(hours=8), None)),
        (
            "override <@U0OLGA|olga> until 2026-12-08 09:00",
            Swap(OLGA, None, None, datetime(2026, 12, 8, 9, 0)),
        ),
        (
            "override U0OLGA level 1 until 2026-12-08T09:00+01:00",
            Swap(OLGA, 1, None, datetime.fromisoformat("2026-12-08T09:00+01:00")),
        ),
        ("override cancel", Cancel(None)),
        ("Override Cancel", Cancel(None)),
        ("override cancel <@U0OLGA|olga>", Cancel(OLGA)),
        ("help", "help"),
    ],
)
def test_oncall_text_is_read_into_what_it_asks(text: str, wanted: object) -> None:
    assert parse(text) == wanted


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("override", "Name who takes over"),
        ("override @olga", "is not a person"),
        ("override <@U0OLGA> for", "`for` needs a value"),
        ("override <@U0OLGA> for soon", "is not a duration"),
        ("override <@U0OLGA> for 0s", "longer than that"),
        ("override <@U0OLGA> until 2026-12-08", "Give the time of day too"),
        ("override <@U0OLGA> until tomorrow", "is not a date and time"),
        ("override <@U0OLGA> for 8h until 2026-12-08 09:00", "not both"),
        ("override <@U0OLGA> level one", "`level` takes a number"),
        ("override <@U0OLGA> for 8h for 9h", "Give `for` once"),
        ("override <@U0OLGA> please", "Unknown word"),
        ("override cancel me now", "at most whose override"),
        ("x" * 500, "too long"),
    ],
)
def test_bad_oncall_text_says_what_is_wrong(text: str, problem: str) -> None:
    said = parse(text)
    assert isinstance(said, str) and problem in said


# --- hand-offs ----------------------------------------------------------------------------------


HOURLY_HANDOFF = {"members": [A, B], "every": "1d", "handoff": "2026-11-27T13:00:00+00:00"}


def test_a_hand_off_while_the_bot_is_down_is_announced_once_and_pages_the_new_person(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.bot.start()
        (timer,) = w.store.pending_timers(HANDOFF_TIMER)
        assert timer.due_at == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
        incident = await w.open("queue stuck")  # 12:00: Bob's turn until 13:00
        assert len(w.pages(B)) == 1 and w.pages(A) == []
        # The bot dies; while it is down the hand-off (13:00) and the level's deadline pass.
        w.clock.advance(hours=2)
        w.bot = Bot(w, "bot-2")
        await w.bot.start()
        (handoff_dm,) = [d for d in w.dms(A) if "You are on call" in d]
        assert "You are on call for level 1, On-call DevOps Engineer from Fri 27 Nov 13:00 " in (
            handoff_dm
        )
        assert "taking over from <@U0BOB>" in handoff_dm
        assert f"*INC-{incident.id}* · SEV 2 · queue stuck" in handoff_dm
        assert "Nothing is open" not in handoff_dm
        assert w.lines()[-1] == (
            ":arrows_counterclockwise: On-call hand-off, level 1, On-call DevOps Engineer: "
            "<@U0ALICE> takes over from <@U0BOB> until Sat 28 Nov 13:00 UTC."
        )
        # The level's next page (it repeats every 90 min) went to Alice, on call now.
        assert len(w.pages(A)) == 1 and len(w.pages(B)) == 1
        # The next hand-off has its timer; a third start and more sweeps send nothing again.
        (following,) = w.store.pending_timers(HANDOFF_TIMER)
        assert following.due_at == datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
        calls = len(w.slack.calls_to("chat.postMessage"))
        w.bot = Bot(w, "bot-3")
        await w.bot.start()
        await w.later(minutes=5)
        assert len(w.slack.calls_to("chat.postMessage")) == calls
        assert len([d for d in w.dms(A) if "You are on call" in d]) == 1

    scenario(tmp_path, slack, config(HOURLY_HANDOFF, lead=False, repeat_every="90m"), body)


def test_a_hand_off_message_that_fails_is_retried_and_nothing_is_sent_twice(
    tmp_path: Path, slack: SlackFake, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(w: World) -> None:
        await w.bot.start()
        w.slack.fail_next("chat.postMessage", "fatal_error")  # the DM; the channel's line works
        with caplog.at_level(logging.ERROR):
            await w.later(hours=1)
        assert "trying again in 5s" in caplog.text
        assert w.dms(A) == [] and len(w.lines()) == 1
        await w.later(seconds=5)
        (handoff_dm,) = w.dms(A)
        assert "Nothing is open: no incidents, no firing alerts, no locks." in handoff_dm
        assert len(w.lines()) == 1
        assert w.store.pending_timers(HANDOFF_TIMER)[0].due_at == datetime(
            2026, 11, 28, 13, 0, tzinfo=UTC
        )

    scenario(tmp_path, slack, config(HOURLY_HANDOFF), body)


def test_hand_offs_overtaken_while_down_announce_only_the_latest(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.bot.start()
        w.clock.advance(days=2, hours=2)  # down across three hand-offs: 27th, 28th, 29th
        w.bot = Bot(w, "bot-2")
        await w.bot.start()
        assert w.dms(B) == []  # the 28th's, overtaken
        (handoff_dm,) = w.dms(A)
        assert "from Sun 29 Nov 13:00 UTC until Mon 30 Nov 13:00 UTC" in handoff_dm
        assert len(w.lines()) == 1

    scenario(tmp_path, slack, config(HOURLY_HANDOFF), body)


def test_a_hand_off_timer_the_config_no_longer_has_is_dropped(
    tmp_path: Path, slack: SlackFake
) -> None:
    async def body(w: World) -> None:
        await w.bot.start()
        moved = {**HOURLY_HANDOFF, "handoff": "2026-11-27T15:00:00+00:00"}
        w.config = config(moved, channel=w.channel)
        w.bot = Bot(w, "bot-2")
        await w.bot.start()
        await w.later(hours=1)  # the old 13:00 timer fires: not a hand-off any more
        assert w.dms(A) == [] and w.lines() == []
        await w.later(hours=2)  # 15:00, the new one
        assert len(w.dms(A)) == 1

    scenario(tmp_path, slack, config(HOURLY_HANDOFF), body)


# --- the store ----------------------------------------------------------------------------------


def test_overrides_and_hand_off_notices_in_the_store(store_url: str) -> None:
    clock = ManualClock(datetime(2026, 12, 7, 8, 0, tzinfo=UTC))
    store = Store(store_url, clock=clock)
    try:
        oncall = OnCallStore(store)
        berlin_time = datetime.fromisoformat("2026-12-07T10:00:00+01:00")
        made = oncall.add_override(ONCALL_LEVEL, OLGA, clock(), berlin_time, B)
        assert made.ends_at == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
        oncall.add_override("CTO", LEAD, clock(), clock() + timedelta(days=1), APPROVER)
        with pytest.raises(ValueError):
            oncall.add_override(ONCALL_LEVEL, OLGA, clock(), clock(), B)
        assert [o.user_id for o in oncall.overrides(ending_after=clock())] == [OLGA, LEAD]
        assert [o.id for o in oncall.overrides(ONCALL_LEVEL, ending_after=clock())] == [made.id]
        assert oncall.overrides(ending_after=berlin_time, starting_by=berlin_time)[0].level == "CTO"
        later = clock() + timedelta(minutes=30)
        (ended,) = oncall.end_overrides([made.id], OLGA, later)
        assert (ended.ends_at, ended.cancelled_by) == (later, OLGA)
        assert oncall.end_overrides([made.id], OLGA, later) == []  # ended already
        at = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
        assert oncall.record_handoff_notice(ONCALL_LEVEL, at, A)
        assert not oncall.record_handoff_notice(ONCALL_LEVEL, at.astimezone(PLUS_ONE), A)
        assert oncall.record_handoff_notice(ONCALL_LEVEL, at, "C0CHANNEL", "channel_not_found")
        assert oncall.handoff_notices(ONCALL_LEVEL, at) == {A, "C0CHANNEL"}
        assert oncall.handoff_notices(ONCALL_LEVEL, at + timedelta(days=1)) == set()
    finally:
        store.close()
