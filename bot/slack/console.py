"""The local console: the embedded default, no Slack account needed.

A person types the same slash commands as in Slack; they go through the same dispatcher and
handlers. Messages render as text (header, sections, fields, context, buttons); each button
gets a number, and typing the number presses it through the same action handlers as a click.
"""

from __future__ import annotations

import asyncio
import html
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bot.slack.chat import Message, MessageRef, Upload
from bot.slack.dispatch import ActionRequest, CommandRequest, Dispatcher
from bot.slack.terminal import INTERRUPT, LineReader
from bot.workers import WorkerPool

CONSOLE_USER = "UCONSOLE"
USER_ID = re.compile(r"[UW][A-Z0-9]{1,20}")
CONSOLE_CHANNEL = "CCONSOLE"
PROMPT = "eventmesh> "  # after whom you are: "UCONSOLE eventmesh> "
RULE = "─" * 60
HOME = "/home"  # the console's own command: Slack shows the same in the App Home tab
ALERTS = "/alerts"  # the console's own: the alert messages the summary lines were about
RESET = "/reset"  # the console's own: leave, clear the demo's state, start afresh
SUMMARY_AFTER_S = 1.0
SUMMARY_WIDTH = 300
MAX_HELD = 500

EMOJI = {
    "large_green_circle": "🟢",
    "large_yellow_circle": "🟡",
    "red_circle": "🔴",
    "hourglass_flowing_sand": "⏳",
    "warning": "⚠️",
    "no_entry": "⛔",
    "x": "❌",
    "white_check_mark": "✅",
    "rotating_light": "🚨",
    "eyes": "👀",
    "arrow_double_up": "⏫",
    "repeat": "🔁",
    "alarm_clock": "⏰",
    "zzz": "💤",
    "leftwards_arrow_with_hook": "↩️",
    "memo": "📝",
    "information_source": "ℹ️",
    "white_small_square": "▫️",
    "heavy_minus_sign": "➖",
    "lock": "🔒",
    "unlock": "🔓",
    "hourglass": "⌛",
    "grey_question": "❔",
    "arrow_down": "⬇️",
    "bell": "🔔",
    "wrench": "🔧",
}


@dataclass(frozen=True)
class Button:
    action_id: str
    value: str
    ref: MessageRef | None
    block_id: str | None = None


# What Slack's mrkdwn leaves alone inside: code blocks, inline code, <links and mentions>.
_PROTECTED = re.compile(r"```(.*?)```|`([^`\n]+)`|<([^<>\n]+)>", re.DOTALL)
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
_KEPT = re.compile("\x00([0-9]+)\x00")


def _span(mark: str) -> re.Pattern[str]:
    """*bold*, _italic_, ~strike~ as Slack reads them: the marks hug the text, and a mark
    inside a word (snake_case, 2*3*4) is not one."""
    m = re.escape(mark)
    return re.compile(rf"(?<![\w{m}]){m}(?=\S)([^{m}\n]+?)(?<=\S){m}(?![\w{m}])")


# (pattern, ANSI on, ANSI off): each turns off only its own attribute, so they nest.
_SPANS = ((_span("*"), "1", "22"), (_span("_"), "3", "23"), (_span("~"), "9", "29"))
CODE_STYLE = ("36", "39")


class TextRenderer:
    """Block Kit to terminal text: mrkdwn's bold, italics, strike-through and code as the
    terminal's own (only when the output is a terminal; else the marks are just dropped),
    links as `text (url)`, mentions as @U… and #channel, emoji shortcodes as emoji."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def _style(self, text: str, on: str, off: str = "0") -> str:
        return f"\033[{on}m{text}\033[{off}m" if self.color else text

    def mrkdwn(self, text: str) -> str:
        kept: list[str] = []  # rendered pieces no other rule may touch, by placeholder

        def keep(match: re.Match[str]) -> str:
            block, code, angle = match.groups()
            if block is not None:
                rendered = html.unescape(block.strip("\n"))  # already its own lines here
            elif code is not None:
                rendered = self._style(html.unescape(code), *CODE_STYLE)
            else:
                rendered = _angle(angle)
            kept.append(rendered)
            return f"\x00{len(kept) - 1}\x00"

        text = _PROTECTED.sub(keep, text)
        text = _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)
        for pattern, on, off in _SPANS:
            text = pattern.sub(lambda m, on=on, off=off: self._style(m.group(1), on, off), text)
        return _KEPT.sub(lambda m: kept[int(m.group(1))], html.unescape(text))

    def _text(self, obj: dict[str, Any] | None) -> str:
        if not obj:
            return ""
        raw = str(obj.get("text", ""))
        return self.mrkdwn(raw) if obj.get("type") == "mrkdwn" else raw

    def _checkbox(
        self,
        element: dict[str, Any],
        option: dict[str, Any],
        block_id: str | None,
        press: Callable[[dict[str, Any], str | None], int],
    ) -> str:
        """'[x] 1. Check backups — done by @U1 at 10:02:03 UTC [7]': a number ticks it."""
        ticked = option in (element.get("initial_options") or [])
        box = "[x]" if ticked else "[ ]"
        text = f"{box} {self._text(option.get('text'))}"
        if option.get("description"):
            text += f" — {self._text(option['description'])}"
        return f"{text} [{press(_toggled(element, option, ticked), block_id)}]"

    def render(self, message: Message, press: Callable[[dict[str, Any], str | None], int]) -> str:
        if not message.blocks:
            return self.mrkdwn(message.text)
        lines: list[str] = []
        for block in message.blocks:
            kind = block.get("type")
            if kind == "header":
                lines.append(self._style(self._text(block.get("text")), "1;4", "22;24"))
            elif kind == "section":
                if block.get("text"):
                    lines.append(self._text(block["text"]))
                lines.extend(
                    "  " + self._text(f).replace("\n", "\n    ") for f in block.get("fields", [])
                )
                accessory = block.get("accessory") or {}
                if accessory.get("type") == "button":  # a button beside the text (App Home)
                    number = press(accessory, block.get("block_id"))
                    lines.append(f"   [{number}] {self._text(accessory.get('text'))}")
            elif kind == "context":
                joined = "  ".join(self._text(e) for e in block.get("elements", []))
                lines.append(self._style(joined, "2", "22"))
            elif kind == "divider":
                lines.append("-" * 40)
            elif kind == "actions":
                block_id = block.get("block_id")
                shown = [
                    self._checkbox(e, option, block_id, press)
                    for e in block.get("elements", [])
                    if e.get("type") == "checkboxes"
                    for option in e.get("options", [])
                ]
                shown += [
                    f"[{press(e, block_id)}] {self._text(e.get('text'))}"
                    for e in block.get("elements", [])
                    if e.get("type") == "button"
                ]
                lines.append("   ".join(shown))
        return "\n".join(lines)


def _toggled(element: dict[str, Any], option: dict[str, Any], ticked: bool) -> dict[str, Any]:
    """A checkbox as a button: pressing it sends what Slack would after the click — the
    option's value when it becomes ticked, and (never the option's value) when it clears."""
    value = str(option.get("value", ""))
    return {"action_id": element["action_id"], "value": f"!{value}" if ticked else value}


def _angle(inner: str) -> str:
    """<@U1>, <#C1|ops>, <!here>, <https://x|text>: how a terminal shows Slack's <…>."""
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return target
    if target.startswith("#"):
        return f"#{label or target[1:]}"
    if target.startswith("!"):
        word = target[1:]
        return f"@{word}" if word in ("here", "channel", "everyone") else label or word
    if target.startswith(("http://", "https://", "mailto:")):
        return f"{html.unescape(label)} ({target})" if label and label != target else target
    return f"<{inner}>"


@dataclass
class Held:
    """A message of the summarized channel, kept until /alerts shows it."""

    message: Message
    ref: MessageRef
    note: str
    new: bool  # a post (else an update of one)


class ConsoleChat:
    """Chat on a terminal: messages are printed; posts and updates are numbered like Slack's ts.

    A shared file (a chart) is saved under `files_dir` and its path printed. What goes to the
    `summarized` channel (the alerts channel: the scheduled checks' alerts, every change of
    each) is held instead: one line says what changed in a round of checks (the messages of
    SUMMARY_AFTER_S), and /alerts prints them in full, buttons and all.
    """

    def __init__(
        self,
        out: TextIO = sys.stdout,
        color: bool | None = None,
        files_dir: Path = Path("data") / "files",
        summarized: str | None = None,
    ) -> None:
        self.out = out
        self.renderer = TextRenderer(out.isatty() if color is None else color)
        self.files_dir = files_dir
        self.buttons: dict[int, Button] = {}
        self._numbers: dict[tuple[MessageRef | None, str, str], int] = {}
        self.prompting = False
        self.prompt = prompt_for(CONSOLE_USER)
        self._next_ts = 0
        self._files = 0
        self.summarized = summarized
        self.held: dict[tuple[str, str], Held] = {}  # by (channel, ts): thread lines have theirs
        self._round: list[Held] = []  # held since the last summary line
        self._summary: asyncio.TimerHandle | None = None

    def _hold(self, message: Message, ref: MessageRef, note: str, *, new: bool) -> None:
        # A message's latest version replaces the one held (and moves to the end).
        held = Held(message, ref, note, new)
        self.held.pop((ref.channel, ref.ts), None)
        self.held[(ref.channel, ref.ts)] = held
        while len(self.held) > MAX_HELD:
            del self.held[next(iter(self.held))]
        self._round.append(held)
        if self._summary is None:
            # The changes of one round of checks land within a moment of each other.
            loop = asyncio.get_running_loop()
            self._summary = loop.call_later(SUMMARY_AFTER_S, self._say_summary)

    def _say_summary(self) -> None:
        self._summary = None
        changes, self._round = self._round, []
        if not changes:
            return
        latest = {(h.ref.channel, h.ref.ts): h for h in changes if h.note != "in thread"}
        words = "; ".join(_first_line(h.message.text) for h in latest.values())
        counted = f"{len(latest)} alert message(s) new or changed" if latest else "thread lines"
        line = f"🔔 {counted}: {words}" if words else f"🔔 {counted}"
        line = line if len(line) <= SUMMARY_WIDTH else line[: SUMMARY_WIDTH - 1] + "…"
        before, after = ("\n", self.prompt) if self.prompting else ("", "")
        self.out.write(f"{before}{line} — /alerts shows them\n{after}")
        self.out.flush()

    def show_held(self) -> int:
        """Print what the summary lines were about, in full; how many messages that was."""
        held, self.held = list(self.held.values()), {}
        for each in held:
            self._print(each.message, each.ref, each.note)
        return len(held)

    def _print(self, message: Message, ref: MessageRef | None, note: str = "") -> None:
        def press(element: dict[str, Any], block_id: str | None) -> int:
            # A button keeps its number for as long as it exists: the same message (updated in
            # place), action and value is the same button, and a person re-types what they saw.
            # Its block_id (the state it was drawn in) is the latest one shown.
            identity = (ref, element["action_id"], element.get("value", ""))
            number = self._numbers.get(identity)
            if number is None:
                number = self._numbers[identity] = len(self.buttons) + 1
            self.buttons[number] = Button(
                element["action_id"], element.get("value", ""), ref, block_id
            )
            return number

        body = self.renderer.render(message, press)
        heading = RULE if not note else f"{RULE[: len(RULE) - len(note) - 2]} {note}"
        # Long work (a deploy, a timer's page) reports while the person sits at the prompt:
        # print below it, then show the prompt again.
        before, after = ("\n", self.prompt) if self.prompting else ("", "")
        self.out.write(f"{before}{heading}\n{body}\n{after}")
        self.out.flush()

    async def post(
        self,
        channel: str,
        message: Message,
        *,
        thread_ts: str | None = None,
        key: str | None = None,
    ) -> MessageRef:
        self._next_ts += 1
        ref = MessageRef(channel, f"{self._next_ts}.000000")
        if channel == self.summarized:
            self._hold(message, ref, "in thread" if thread_ts else "", new=True)
        else:
            self._print(message, ref, "in thread" if thread_ts else "")
        return ref

    async def update(self, ref: MessageRef, message: Message) -> None:
        if ref.channel == self.summarized:
            self._hold(message, ref, "updated", new=False)
            return
        where = _dm_user(ref.channel)
        self._print(message, ref, f"→ DM @{where} updated" if where else "updated")

    async def dm(self, user_id: str, message: Message, *, key: str | None = None) -> MessageRef:
        self._next_ts += 1
        ref = MessageRef(dm_channel(user_id), f"{self._next_ts}.000000")
        self._print(message, ref, f"→ DM @{user_id}")
        return ref

    async def respond(self, response_url: str, message: Message) -> None:
        self._print(message, None, "only you can see this")

    async def find_posted(
        self,
        key: str,
        *,
        channel: str | None = None,
        user_id: str | None = None,
        thread_ts: str | None = None,
    ) -> MessageRef | None:
        return None  # a terminal never loses an answer: nothing printed is in doubt

    async def find_uploaded(
        self, filename: str, *, channel: str, thread_ts: str | None = None
    ) -> MessageRef | None:
        return None  # likewise: a file saved is never in doubt

    async def permalink(self, ref: MessageRef) -> str | None:
        return None  # a terminal has no links; messages are referred to by channel and time

    async def publish_home(self, user_id: str, blocks: list[dict[str, Any]]) -> None:
        self._print(Message("App Home", blocks), None, f"→ Home of @{user_id}")

    async def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> str:
        self._files += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = (self.files_dir / f"{stamp}-{self._files}-{Path(upload.filename).name}").resolve()
        await asyncio.to_thread(_save, path, upload.content)
        self._print(Message(f"📎 {upload.title}: saved to {path}"), None, "file")
        return str(path)


def _first_line(text: str) -> str:
    line = _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text.strip().split("\n")[0])
    return re.sub(r"[*_~`]", "", line)[:80]


def _save(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def prompt_for(user_id: str) -> str:
    """The prompt says who you are: `as U0APPROVER1` changes it."""
    return f"{user_id} {PROMPT}"


def dm_channel(user_id: str) -> str:
    """A user's DM conversation id, shaped like Slack's (D…)."""
    return "D" + user_id[1:]


def _dm_user(channel: str) -> str | None:
    return "U" + channel[1:] if channel.startswith("D") else None


class Console:
    """Reads lines, runs them as commands or button presses, waits for the work, prompts again."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        chat: ConsoleChat,
        workers: WorkerPool,
        *,
        stdin: TextIO | None = sys.stdin,
        user_id: str = CONSOLE_USER,
        channel_id: str = CONSOLE_CHANNEL,
    ) -> None:
        self.dispatcher = dispatcher
        self.chat = chat
        self.workers = workers
        self.stdin = stdin
        self.channel_id = channel_id
        self.user_id = user_id
        self.reset_asked = False  # /reset: the caller clears the console's state and restarts

    @property
    def user_id(self) -> str:
        return self._user_id

    @user_id.setter
    def user_id(self, user_id: str) -> None:
        self._user_id = user_id
        self.chat.prompt = prompt_for(user_id)

    def greeting(self) -> str:
        names = "  ".join(sorted([*self.dispatcher.commands, HOME, ALERTS, RESET]))
        return (
            f"Type a slash command as in Slack ({names}), e.g. /health all or /health help.\n"
            "Type a button's number to press it; 'as <user id>' makes you another user, "
            "'as <user id> /command …' runs one command as them; 'help' lists commands.\n"
            "Ctrl-C clears the line; Ctrl-C twice on an empty line, 'exit' or Ctrl-D leaves."
        )

    async def run(self) -> None:
        out = self.chat.out
        out.write(self.greeting() + "\n")
        lines = LineReader(self.stdin)
        leaving = False  # the last line was a Ctrl-C on an empty line: another one leaves
        try:
            while True:
                out.write(self.chat.prompt)
                out.flush()
                self.chat.prompting = True
                try:
                    line = await lines.readline()
                finally:
                    self.chat.prompting = False
                if line is None:  # Ctrl-D
                    out.write("\n")
                    return
                if line.endswith(INTERRUPT):
                    out.write("\n")  # the terminal echoed ^C; the line it ended is dropped
                    if line.removesuffix(INTERRUPT).strip():
                        leaving = False
                    elif leaving:
                        return
                    else:
                        leaving = True
                        self._say("(Ctrl-C again to leave; 'exit' or Ctrl-D also leave)")
                    continue
                leaving = False
                line = line.strip()
                if line in ("exit", "quit"):
                    return
                if line == RESET:
                    self.reset_asked = True
                    self._say("Starting the demo afresh: its incidents, alerts and releases go.")
                    return
                if line:
                    await self.handle_line(line)
                    await self.workers.join()
        finally:
            lines.close()

    async def handle_line(self, line: str) -> None:
        if line in ("help", "?"):
            self._say(self._command_list())
        elif line == "as" or line.startswith("as "):
            await self._act_as(line.removeprefix("as").strip())
        elif line.isdigit():
            await self._press(int(line))
        elif line == ALERTS:
            if not self.chat.show_held():
                self._say("No alert messages since the last /alerts.")
        elif line == HOME or line.startswith(HOME + " "):
            # Slack's App Home tab, printed once: the console has no tab to keep current.
            await self.dispatcher.services.home.show(self.user_id)
        elif line.startswith("/"):
            name, _, text = line.partition(" ")
            request = CommandRequest(
                command=name,
                text=text.strip(),
                user_id=self.user_id,
                channel_id=self.channel_id,
                response_url="console://ephemeral",
            )
            await self.dispatcher.handle_command(request, self._ack)
        else:
            self._say("Commands start with '/', e.g. /health all. 'help' lists them.")

    async def _press(self, number: int) -> None:
        button = self.chat.buttons.get(number)
        if button is None:
            self._say(f"There is no button [{number}].")
            return
        request = ActionRequest(
            action_id=button.action_id,
            value=button.value,
            user_id=self.user_id,
            channel_id=button.ref.channel if button.ref else self.channel_id,
            message_ts=button.ref.ts if button.ref else None,
            response_url="console://ephemeral",
            block_id=button.block_id,
        )
        await self.dispatcher.handle_action(request, self._ack)

    async def _act_as(self, text: str) -> None:
        """Act as another user, so one person can walk through an approval or an escalation:
        from now on, or (`as U0X /deploy …`, `as U0X 3`) for that one line."""
        user_id, _, line = text.partition(" ")
        if not user_id:
            self._say(f"You are {self.user_id}. 'as <user id>' acts as someone else.")
        elif USER_ID.fullmatch(user_id) is None:
            self._say(f"{user_id[:40]!r} is not a Slack user id (like U0APPROVER1).")
        elif line.strip():
            # The request carries the user id it was made with: work handed off keeps it.
            yourself, self.user_id = self.user_id, user_id
            try:
                await self.handle_line(line.strip())
            finally:
                self.user_id = yourself
        else:
            self.user_id = user_id
            self._say(f"You are now {user_id}.")

    async def _ack(self, message: Message | None) -> None:
        if message is not None:
            await self.chat.respond("console://ephemeral", message)

    def _command_list(self) -> str:
        lines = [f"  {spec.name:<10} {spec.summary}" for spec in self.dispatcher.commands.values()]
        lines.append(f"  {HOME:<10} What Slack's App Home tab shows you: everything at a glance.")
        lines.append(f"  {ALERTS:<10} The alert messages the 🔔 summary lines were about, in full.")
        lines.append(f"  {RESET:<10} Start the demo afresh: no incidents, alerts or releases.")
        return "\n".join(lines)

    def _say(self, text: str) -> None:
        self.chat.out.write(text + "\n")
        self.chat.out.flush()
