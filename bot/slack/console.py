"""The local console: the embedded default, no Slack account needed.

A person types the same slash commands as in Slack; they go through the same dispatcher and
handlers. Messages render as text (header, sections, fields, context, buttons); each button
gets a number, and typing the number presses it through the same action handlers as a click.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bot.slack.chat import Message, MessageRef, Upload
from bot.slack.dispatch import ActionRequest, CommandRequest, Dispatcher
from bot.workers import WorkerPool

CONSOLE_USER = "UCONSOLE"
USER_ID = re.compile(r"[UW][A-Z0-9]{1,20}")
CONSOLE_CHANNEL = "CCONSOLE"
PROMPT = "eventmesh> "
RULE = "─" * 60

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
}


@dataclass(frozen=True)
class Button:
    action_id: str
    value: str
    ref: MessageRef | None
    block_id: str | None = None


class TextRenderer:
    """Block Kit to terminal text. Bold and dim only when the output is a terminal."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def _style(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def mrkdwn(self, text: str) -> str:
        text = text.replace("```", "")  # a code block is already its own lines here
        text = re.sub(r":([a-z0-9_+-]+):", lambda m: EMOJI.get(m.group(1), m.group(0)), text)
        text = re.sub(r"<@([A-Z0-9]+)>", r"@\1", text)
        text = re.sub(
            r"<#([A-Z0-9]+)(?:\|([^>]*))?>", lambda m: f"#{m.group(2) or m.group(1)}", text
        )
        text = re.sub(r"<(https?://[^|>]+)\|([^>]+)>", r"\2 (\1)", text)
        text = re.sub(r"\*([^*\n]+)\*", lambda m: self._style(m.group(1), "1"), text)
        return html.unescape(text)

    def _text(self, obj: dict[str, Any] | None) -> str:
        if not obj:
            return ""
        raw = str(obj.get("text", ""))
        return self.mrkdwn(raw) if obj.get("type") == "mrkdwn" else raw

    def render(self, message: Message, press: Callable[[dict[str, Any], str | None], int]) -> str:
        if not message.blocks:
            return self.mrkdwn(message.text)
        lines: list[str] = []
        for block in message.blocks:
            kind = block.get("type")
            if kind == "header":
                lines.append(self._style(self._text(block.get("text")), "1;4"))
            elif kind == "section":
                if block.get("text"):
                    lines.append(self._text(block["text"]))
                lines.extend(
                    "  " + self._text(f).replace("\n", "\n    ") for f in block.get("fields", [])
                )
            elif kind == "context":
                joined = "  ".join(self._text(e) for e in block.get("elements", []))
                lines.append(self._style(joined, "2"))
            elif kind == "divider":
                lines.append("-" * 40)
            elif kind == "actions":
                lines.append(
                    "   ".join(
                        f"[{press(e, block.get('block_id'))}] {self._text(e.get('text'))}"
                        for e in block.get("elements", [])
                        if e.get("type") == "button"
                    )
                )
        return "\n".join(lines)


class ConsoleChat:
    """Chat on a terminal: messages are printed; posts and updates are numbered like Slack's ts.

    A shared file (a chart) is saved under `files_dir` and its path printed.
    """

    def __init__(
        self,
        out: TextIO = sys.stdout,
        color: bool | None = None,
        files_dir: Path = Path("data") / "files",
    ) -> None:
        self.out = out
        self.renderer = TextRenderer(out.isatty() if color is None else color)
        self.files_dir = files_dir
        self.buttons: dict[int, Button] = {}
        self._numbers: dict[tuple[MessageRef | None, str, str], int] = {}
        self.prompting = False
        self._next_ts = 0
        self._files = 0

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
        before, after = ("\n", PROMPT) if self.prompting else ("", "")
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
        self._print(message, ref, "in thread" if thread_ts else "")
        return ref

    async def update(self, ref: MessageRef, message: Message) -> None:
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

    async def permalink(self, ref: MessageRef) -> str | None:
        return None  # a terminal has no links; messages are referred to by channel and time

    async def upload(self, channel: str, upload: Upload, *, thread_ts: str | None = None) -> str:
        self._files += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = (self.files_dir / f"{stamp}-{self._files}-{Path(upload.filename).name}").resolve()
        await asyncio.to_thread(_save, path, upload.content)
        self._print(Message(f"📎 {upload.title}: saved to {path}"), None, "file")
        return str(path)


def _save(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


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
        self.user_id = user_id
        self.channel_id = channel_id

    def greeting(self) -> str:
        names = "  ".join(sorted(self.dispatcher.commands))
        return (
            f"Type a slash command as in Slack ({names}), e.g. /health all or /health help.\n"
            "Type a button's number to press it; 'as <user id>' acts as another user; "
            "'help' lists commands; 'exit' or Ctrl-D leaves."
        )

    async def run(self) -> None:
        out = self.chat.out
        out.write(self.greeting() + "\n")
        lines = LineReader(self.stdin)
        try:
            while True:
                out.write(PROMPT)
                out.flush()
                self.chat.prompting = True
                try:
                    line = await lines.readline()
                finally:
                    self.chat.prompting = False
                if line is None:  # Ctrl-D
                    out.write("\n")
                    return
                line = line.strip()
                if line in ("exit", "quit"):
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
            self._act_as(line.removeprefix("as").strip())
        elif line.isdigit():
            await self._press(int(line))
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

    def _act_as(self, user_id: str) -> None:
        """Act as another user, so one person can walk through an approval or an escalation."""
        if not user_id:
            self._say(f"You are {self.user_id}. 'as <user id>' acts as someone else.")
        elif USER_ID.fullmatch(user_id) is None:
            self._say(f"{user_id[:40]!r} is not a Slack user id (like U0APPROVER1).")
        else:
            self.user_id = user_id
            self._say(f"You are now {user_id}.")

    async def _ack(self, message: Message | None) -> None:
        if message is not None:
            await self.chat.respond("console://ephemeral", message)

    def _command_list(self) -> str:
        return "\n".join(
            f"  {spec.name:<10} {spec.summary}" for spec in self.dispatcher.commands.values()
        )

    def _say(self, text: str) -> None:
        self.chat.out.write(text + "\n")
        self.chat.out.flush()


class LineReader:
    """Lines from stdin without blocking the event loop (the bot keeps serving meanwhile).

    A terminal or pipe is watched by the loop itself, so Ctrl-C and shutdown never wait on a
    thread stuck in input(); a regular file (which the loop cannot watch) is read in a thread,
    where a read never blocks for long. No stream at all (standard input closed, so Python's
    sys.stdin is None) is end-of-file at once.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._loop = asyncio.get_running_loop()
        self._buffer = b""
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._fd: int | None = None
        if stream is None:
            return
        try:
            fd = stream.fileno()
            self._loop.add_reader(fd, self._readable)
            self._fd = fd
        except (OSError, ValueError, PermissionError, NotImplementedError):
            self._fd = None

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:  # e.g. EIO when the terminal goes away
            chunk = b""
        if chunk:
            self._buffer += chunk
        else:
            self._eof = True
            self._loop.remove_reader(self._fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def readline(self) -> str | None:
        if self._fd is None:
            if self.stream is None:
                return None
            line = await asyncio.to_thread(self.stream.readline)
            return line if line else None
        while b"\n" not in self._buffer and not self._eof:
            self._waiter = self._loop.create_future()
            await self._waiter
        if b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            return line.decode(errors="replace")
        if self._buffer:  # last line without a newline
            line, self._buffer = self._buffer, b""
            return line.decode(errors="replace")
        return None

    def close(self) -> None:
        if self._fd is not None and not self._eof:
            self._loop.remove_reader(self._fd)
