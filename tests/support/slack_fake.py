"""A fake Slack Web API on a real loopback HTTP port, so no test ever reaches slack.com.

The code under test keeps its real slack_sdk ``WebClient``/``AsyncWebClient`` (pointed here
with ``base_url=fake.api_url``) and Bolt's ``respond``: serialisation, retry handlers and error
handling all run for real over HTTP. The fake answers the way Slack does (``ok``, ``channel``,
``ts``, ``invalid_blocks``, ``ratelimited`` with ``Retry-After``) and records every request so
tests can assert on what the bot sent and wait for it without sleeping.

File uploads (``files_upload_v2``) take Slack's three steps: ``files.getUploadURLExternal``
answers an upload URL on this fake (``/upload/v1/<file id>``) and a file id; the bytes are
POSTed there, unauthenticated (the URL is the credential), and must be exactly the announced
``length``; ``files.completeUploadExternal`` then shares the uploaded files in ``channel_id``
(a message with ``files``, as Slack posts it). ``fake.files`` holds every completed upload with
its bytes.

App Home: ``views.publish`` takes a ``home`` view for one user, checked like Slack (at most 100
blocks, the Block Kit limits, 250 kB) and answered ``invalid_arguments`` with the problems in
``response_metadata`` otherwise; ``fake.homes`` holds the view each user is shown now.

Socket Mode: ``apps.connections.open`` takes the app-level token (``xapp-``) and nothing else
does, as in Slack; it answers with a URL of the ``SocketModeFake`` attached as
``fake.socket_mode`` (tests/support/socket_mode_fake.py).

Message metadata: ``chat.postMessage`` keeps ``metadata`` (``event_type`` + ``event_payload``)
on the message, and ``conversations.history`` / ``conversations.replies`` show it with
``include_all_metadata``, as Slack does — what a client needs to find its own message after an
answer was lost.

Faults: ``fake.fault(mode, seconds=...)`` makes Slack answer 5xx, 429 with Retry-After,
``ok:false ratelimited``, refuse connections, or carry calls out and drop the answer, for a
while (tests/support/slack_faults.py); ``fake.heal()`` ends it early.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

from tests.support.slack_faults import Fault, FaultPeriod
from tests.support.waiting import wait_on

T = TypeVar("T")

TEAM_ID = "T0TEST"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"

MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100  # a Home tab (or modal) view
MAX_VIEW_BYTES = 250_000  # views.publish: view_too_large past 250 kB
MAX_MESSAGE_TEXT = 40_000
RESPONSE_URL_USES = 5  # Slack: a response_url works at most 5 times (within 30 minutes)
_FIRST_TS_MICROS = 1_700_000_000_000_100  # first ts is '1700000000.000100'
# Form-encoded (or query-string) callers send these as JSON text.
_JSON_ARGS = ("blocks", "attachments", "metadata", "files", "view")
_FIRST_FILE_NUMBER = 1_000_001
MAX_ALT_TEXT = 1000
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})  # Slack: app-level tokens only

# ---------------------------------------------------------------------------------------------
# Block Kit validation
# ---------------------------------------------------------------------------------------------

_TEXT_TYPES = ("plain_text", "mrkdwn")
_PLAIN = ("plain_text",)


def block_kit_errors(blocks: object, max_blocks: int = MAX_BLOCKS) -> list[str]:
    """Say why Slack would answer ``invalid_blocks`` for ``blocks`` (empty list: acceptable).

    Covers the documented limits a ChatOps bot can run into (counts, lengths, text object
    types, ids), not the whole Block Kit schema. Public so tests can run it directly on the
    output of the bot's message builders, without a round trip. A message takes 50 blocks,
    a view (``max_blocks=MAX_VIEW_BLOCKS``) 100.
    """
    if not isinstance(blocks, list):
        return [f"blocks must be a list, not {type(blocks).__name__}"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"{len(blocks)} blocks (max {max_blocks})")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict):
            errors.append(f"{where}: a block must be an object")
            continue
        check = _BLOCK_CHECKS.get(block.get("type"))
        if check is None:
            errors.append(f"{where}: unknown block type {block.get('type')!r}")
            continue
        if "block_id" in block:
            block_id = block["block_id"]
            errors += _id_errors(block_id, f"{where}.block_id")
            if block_id in block_ids:
                errors.append(f"{where}.block_id: duplicate {block_id!r}")
            if isinstance(block_id, str):
                block_ids.add(block_id)
        errors += check(block, where)
    return errors


def _id_errors(value: object, where: str) -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{where}: must be a non-empty string"]
    if len(value) > 255:
        return [f"{where}: {len(value)} characters (max 255)"]
    return []


def _text_errors(
    obj: object, where: str, limit: int, types: tuple[str, ...] = _TEXT_TYPES
) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: must be a text object"]
    errors = []
    if obj.get("type") not in types:
        errors.append(f"{where}.type: {obj.get('type')!r} is not {' or '.join(types)}")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        errors.append(f"{where}.text: must be a non-empty string")
    elif len(text) > limit:
        errors.append(f"{where}.text: {len(text)} characters (max {limit})")
    return errors


def _list_errors(value: object, where: str, limit: int) -> list[str]:
    if not isinstance(value, list) or not value:
        return [f"{where}: must be a non-empty list"]
    if len(value) > limit:
        return [f"{where}: {len(value)} items (max {limit})"]
    return []


def _image_errors(obj: dict[str, Any], where: str) -> list[str]:
    errors = []
    url = obj.get("image_url")
    if url is None and not isinstance(obj.get("slack_file"), dict):
        errors.append(f"{where}: needs image_url or slack_file")
    elif url is not None and (not isinstance(url, str) or not 0 < len(url) <= 3000):
        errors.append(f"{where}.image_url: must be a string of 1-3000 characters")
    alt_text = obj.get("alt_text")
    if not isinstance(alt_text, str) or not 0 < len(alt_text) <= 2000:
        errors.append(f"{where}.alt_text: must be a string of 1-2000 characters")
    return errors


def _element_errors(element: object, where: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"{where}: an element must be an object with a type"]
    errors = []
    if "action_id" in element:
        errors += _id_errors(element["action_id"], f"{where}.action_id")
    if element["type"] == "button":
        errors += _text_errors(element.get("text"), f"{where}.text", 75, _PLAIN)
        value = element.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > 2000):
            errors.append(f"{where}.value: must be a string of at most 2000 characters")
        url = element.get("url")
        if url is not None and (not isinstance(url, str) or len(url) > 3000):
            errors.append(f"{where}.url: must be a string of at most 3000 characters")
        if element.get("style") not in (None, "primary", "danger"):
            errors.append(f"{where}.style: {element['style']!r} is not primary or danger")
    elif element["type"] == "image":
        errors += _image_errors(element, where)
    elif element["type"] == "checkboxes":
        errors += _checkboxes_errors(element, where)
    return errors


def _checkboxes_errors(element: dict[str, Any], where: str) -> list[str]:
    """Checkboxes: 1-10 options, each a text (mrkdwn allowed) and description of at most 75
    characters and a value of at most 150; initial_options must be exactly among them."""
    options = element.get("options")
    errors = _list_errors(options, f"{where}.options", 10)
    if not isinstance(options, list):
        return errors
    for j, option in enumerate(options):
        at = f"{where}.options[{j}]"
        if not isinstance(option, dict):
            errors.append(f"{at}: must be an object")
            continue
        errors += _text_errors(option.get("text"), f"{at}.text", 75)
        if "description" in option:
            errors += _text_errors(option["description"], f"{at}.description", 75)
        value = option.get("value")
        if not isinstance(value, str) or not 0 < len(value) <= 150:
            errors.append(f"{at}.value: must be a string of 1-150 characters")
    for k, initial in enumerate(element.get("initial_options") or []):
        if initial not in options:
            errors.append(f"{where}.initial_options[{k}]: not exactly one of the options")
    return errors


def _section_errors(block: dict[str, Any], where: str) -> list[str]:
    errors = []
    text, fields = block.get("text"), block.get("fields")
    if text is None and fields is None:
        errors.append(f"{where}: a section needs text or fields")
    if text is not None:
        errors += _text_errors(text, f"{where}.text", 3000)
    if fields is not None:
        errors += _list_errors(fields, f"{where}.fields", 10)
        if isinstance(fields, list):
            for j, item in enumerate(fields):
                errors += _text_errors(item, f"{where}.fields[{j}]", 2000)
    if "accessory" in block:
        errors += _element_errors(block["accessory"], f"{where}.accessory")
    return errors


def _header_errors(block: dict[str, Any], where: str) -> list[str]:
    return _text_errors(block.get("text"), f"{where}.text", 150, _PLAIN)


def _context_errors(block: dict[str, Any], where: str) -> list[str]:
    elements = block.get("elements")
    errors = _list_errors(elements, f"{where}.elements", 10)
    if isinstance(elements, list):
        for j, element in enumerate(elements):
            at = f"{where}.elements[{j}]"
            if isinstance(element, dict) and element.get("type") == "image":
                errors += _image_errors(element, at)
            else:
                errors += _text_errors(element, at, 3000)
    return errors


def _actions_errors(block: dict[str, Any], where: str) -> list[str]:
    elements = block.get("elements")
    errors = _list_errors(elements, f"{where}.elements", 25)
    if isinstance(elements, list):
        action_ids: set[str] = set()
        for j, element in enumerate(elements):
            at = f"{where}.elements[{j}]"
            errors += _element_errors(element, at)
            action_id = element.get("action_id") if isinstance(element, dict) else None
            if isinstance(action_id, str):
                if action_id in action_ids:
                    errors.append(f"{at}.action_id: duplicate {action_id!r} in this block")
                action_ids.add(action_id)
    return errors


def _divider_errors(block: dict[str, Any], where: str) -> list[str]:
    return []


def _rich_text_errors(block: dict[str, Any], where: str) -> list[str]:
    return _list_errors(block.get("elements"), f"{where}.elements", 100)


def _image_block_errors(block: dict[str, Any], where: str) -> list[str]:
    errors = _image_errors(block, where)
    if "title" in block:
        errors += _text_errors(block["title"], f"{where}.title", 2000, _PLAIN)
    return errors


def _input_errors(block: dict[str, Any], where: str) -> list[str]:
    errors = _text_errors(block.get("label"), f"{where}.label", 2000, _PLAIN)
    return errors + _element_errors(block.get("element"), f"{where}.element")


_BLOCK_CHECKS: dict[object, Callable[[dict[str, Any], str], list[str]]] = {
    "section": _section_errors,
    "header": _header_errors,
    "context": _context_errors,
    "actions": _actions_errors,
    "divider": _divider_errors,
    "rich_text": _rich_text_errors,
    "image": _image_block_errors,
    "input": _input_errors,
}

# ---------------------------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------------------------


@dataclass
class ApiCall:
    """One Web API request as the fake decoded it, and how it was answered.

    ``args`` merges query string, form fields and JSON body (minus ``token``), with
    ``blocks``/``attachments``/``metadata`` decoded from JSON text when sent form-encoded.
    ``at`` is ``time.monotonic()``: compare calls with each other (e.g. update throttling).
    """

    method: str
    args: dict[str, Any]
    token: str | None
    at: float
    status: int = 200
    error: str | None = None
    answered: bool = True  # False: carried out, but the answer was dropped (a ``drop`` fault)


@dataclass
class _PendingUpload:
    filename: str
    length: int
    content: bytes | None = None


@dataclass
class _Failure:
    error: str
    retry_after: int | None
    status: int | None


@dataclass
class _Answer:
    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    injected: bool = False
    call: ApiCall | None = None  # the call it answered, once recorded
    drop: bool = False  # carried out; close the connection instead of answering
    raw: tuple[int, dict[str, str], bytes, str] | None = None  # a fault's non-JSON answer


class _SlackError(Exception):
    """Ends handling of a request with Slack's ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


class SocketModeEndpoint(Protocol):
    """What ``apps.connections.open`` needs of a Socket Mode server: a fresh WebSocket URL."""

    def connection_url(self) -> str: ...


class SlackFake:
    """Slack's Web API and response_urls, on ``127.0.0.1:<free port>``, recording everything.

    All state is guarded by one condition variable that is notified on every request, which
    is what lets ``wait_for`` block without polling. Read ``calls``/``messages``/``responses``
    directly once ``wait_for`` returned; the helper methods take the lock themselves.

    ``bot_token`` is accepted on every method but ``apps.connections.open``, which takes only
    ``app_token``; the other known token answers ``not_allowed_token_type`` and any unknown
    one ``invalid_auth``, as in Slack. Set ``socket_mode`` to serve Socket Mode.
    """

    def __init__(
        self, bot_token: str = "xoxb-test-token", app_token: str = "xapp-test-token"
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.socket_mode: SocketModeEndpoint | None = None
        # Called (on the serving thread) with each Web API call once recorded, before it is
        # answered: a test's way to act at that instant (kill the bot that made it, say).
        self.on_call: Callable[[ApiCall], None] | None = None
        self.calls: list[ApiCall] = []
        self.responses: list[dict[str, Any]] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.rejected: list[str] = []
        # conversations.info and users.info: every well-formed id exists and the bot is in
        # every channel, but for these (channel_not_found / user_not_found; is_member false).
        self.missing: set[str] = set()
        self.not_joined: set[str] = set()
        # The workspace's directory, for names: conversations.list lists `named_channels`
        # (name -> id), users.list and users.lookupByEmail `people` (id -> their profile).
        # Both page at most `page_size` items at a time, whatever `limit` asks.
        self.named_channels: dict[str, str] = {}
        self.people: dict[str, dict[str, Any]] = {}
        self.page_size = 100
        self._cond = threading.Condition(threading.RLock())
        self._failures: dict[str, list[_Failure]] = {}
        self._rate_limits: dict[str, float] = {}  # method -> seconds between calls per channel
        self._last_accepted: dict[tuple[str, str], float] = {}
        self._response_urls: dict[str, int] = {}
        self.instance = secrets.token_hex(6)  # in api_url: calls meant for another fake miss
        self._next_ts = _FIRST_TS_MICROS
        self.files: dict[str, dict[str, Any]] = {}
        self.upload_posts: list[str] = []  # each POST to an upload URL: "<file id> <status> <n>"
        self._uploads: dict[str, _PendingUpload] = {}
        self._next_file = _FIRST_FILE_NUMBER
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._fault: Fault | None = None
        self._fault_timer: threading.Timer | None = None
        # Serialises fault() and heal() with the listening socket they close and reopen: a
        # timer's heal must not reopen the port while fault() is still closing it.
        self._switching = threading.Lock()
        self.faults: list[FaultPeriod] = []
        self.faulted: list[str] = []  # response_url and upload requests a fault met
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "conversations.open": self._conversations_open,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "conversations.list": self._conversations_list,
            "users.list": self._users_list,
            "users.lookupByEmail": self._users_lookup_by_email,
            "chat.getPermalink": self._get_permalink,
            "apps.connections.open": self._apps_connections_open,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "views.publish": self._views_publish,
        }
        self.homes: dict[str, dict[str, Any]] = {}  # user id -> the Home view Slack shows them

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SlackFake:
        """Listen on a free loopback port; the serving thread is a daemon so nothing hangs."""
        if self._port is not None:
            raise RuntimeError("SlackFake already started")
        self._listen(0)
        return self

    def _listen(self, port: int) -> None:
        server = _Server(("127.0.0.1", port), _Handler)
        server.fake = self
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name="slack-fake",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        self._port = int(server.server_address[1])

    def _stop_listening(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def stop(self) -> None:
        """Stop serving and free the port (idempotent, so teardown can always call it)."""
        with self._switching:
            with self._cond:
                timer, self._fault_timer, self._fault = self._fault_timer, None, None
            if timer is not None:
                timer.cancel()
            self._stop_listening()
            self._port = None

    def __enter__(self) -> SlackFake:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget calls, messages, responses, response_urls and queued failures (keeps serving)."""
        with self._cond:
            self.on_call = None
            self.calls.clear()
            self.responses.clear()
            self.messages.clear()
            self.rejected.clear()
            self.missing.clear()
            self.not_joined.clear()
            self.named_channels.clear()
            self.people.clear()
            self.page_size = 100
            self._failures.clear()
            self._rate_limits.clear()
            self._last_accepted.clear()
            self._response_urls.clear()
            self._next_ts = _FIRST_TS_MICROS
            self.files.clear()
            self.upload_posts.clear()
            self._uploads.clear()
            self.faulted.clear()
            self.homes.clear()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running fake (the same while it refuses)."""
        if self._port is None:
            raise RuntimeError("SlackFake is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """What to give ``WebClient(base_url=...)`` / ``SLACK_API_URL`` (ends with a slash).

        It names this fake: the workers start hundreds of fakes, and a port freed by one is
        soon another's. A call meant for an earlier fake on the same port (from a process or
        thread that outlived its test) must not land among this one's messages.
        """
        return f"{self.base_url}/{self.instance}/api/"

    # -- test-facing helpers ---------------------------------------------------------------

    def add_channel(self, name: str, channel_id: str) -> None:
        """A channel conversations.list shows (and conversations.info names)."""
        with self._cond:
            self.named_channels[name] = channel_id

    def add_person(
        self, user_id: str, username: str, email: str | None = None, display_name: str = ""
    ) -> None:
        """A member users.list shows and, with an email, users.lookupByEmail finds."""
        with self._cond:
            self.people[user_id] = {
                "id": user_id,
                "team_id": TEAM_ID,
                "name": username,
                "deleted": False,
                "profile": {"display_name": display_name, "email": email},
            }

    def calls_to(self, method: str) -> list[ApiCall]:
        """The calls made to one Web API method, in order."""
        with self._cond:
            return [call for call in self.calls if call.method == method]

    def response_url(self) -> str:
        """A fresh response_url (usable ``RESPONSE_URL_USES`` times) for a command or click."""
        url_id = secrets.token_hex(8)
        with self._cond:
            self._response_urls[url_id] = RESPONSE_URL_USES
        return f"{self.base_url}/response/{url_id}"

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        """Copies of the messages in ``channel``, in post order, as they read now."""
        with self._cond:
            return [copy.deepcopy(m) for (ch, _), m in self.messages.items() if ch == channel]

    def files_in(self, channel: str) -> list[dict[str, Any]]:
        """Copies of the files shared in ``channel`` (with their ``content`` bytes), in order."""
        with self._cond:
            return [copy.deepcopy(f) for f in self.files.values() if channel in f["channels"]]

    def home(self, user_id: str) -> dict[str, Any] | None:
        """A copy of the Home tab view Slack shows ``user_id`` now (None: never published)."""
        with self._cond:
            view = self.homes.get(user_id)
            return copy.deepcopy(view) if view is not None else None

    def home_publishes(self, user_id: str) -> list[ApiCall]:
        """The views.publish calls Slack accepted for ``user_id``, in order."""
        with self._cond:
            return [
                call
                for call in self.calls
                if call.method == "views.publish"
                and call.error is None
                and call.args.get("user_id") == user_id
            ]

    def fail_next(
        self,
        method: str,
        error: str = "ratelimited",
        retry_after: int | None = None,
        status: int | None = None,
    ) -> None:
        """Make the next call to ``method`` fail like Slack (queued: call again to fail more).

        ``ratelimited`` answers HTTP 429 with ``Retry-After`` (default 1 s, Slack always sends
        one); any other error answers 200 ``{"ok": false, "error": error}``. ``status``
        overrides the HTTP status, e.g. 500 for a server error.
        """
        with self._cond:
            self._failures.setdefault(method, []).append(_Failure(error, retry_after, status))

    def limit_rate(self, method: str, every_s: float) -> None:
        """Enforce a per-channel rate limit on ``method``, as Slack does for chat.postMessage
        (about one a second per channel): a call that comes less than ``every_s`` after the
        last one accepted for its channel answers 429 ``ratelimited`` with ``Retry-After: 1``.
        ``every_s`` 0 lifts the limit."""
        with self._cond:
            if every_s > 0:
                self._rate_limits[method] = every_s
            else:
                self._rate_limits.pop(method, None)

    def fault(
        self,
        mode: str,
        *,
        seconds: float | None = None,
        status: int = 503,
        retry_after: int = 5,
    ) -> None:
        """Be Slack in trouble from now: ``mode`` is one of ``5xx``, ``429``, ``ratelimited``,
        ``refuse``, ``drop`` (see tests/support/slack_faults.py), for ``seconds`` (None: until
        ``heal()``). ``status`` is a ``5xx`` fault's HTTP status, ``retry_after`` a ``429``'s."""
        fault = Fault(mode, status, retry_after)
        with self._switching:
            self._heal(None)
            if mode == "refuse":
                self._stop_listening()
            with self._cond:
                self._fault = fault
                self.faults.append(FaultPeriod(mode, fault.since))
                if seconds is not None:
                    timer = threading.Timer(seconds, self._heal_timed, args=(fault,))
                    timer.daemon = True
                    self._fault_timer = timer
                    timer.start()
                self._cond.notify_all()

    def heal(self) -> None:
        """End the fault now (a refusing fake listens again on its port); no-op without one."""
        with self._switching:
            self._heal(None)

    def _heal_timed(self, fault: Fault) -> None:
        with self._switching:
            self._heal(fault)

    def _heal(self, only: Fault | None) -> None:
        """End the current fault (only if it is ``only``, when given: a timer that fired late
        must not end the fault that replaced its own). The port listens again before anyone
        waiting on ``faulty`` hears the fault is over."""
        with self._cond:
            fault, timer = self._fault, self._fault_timer
            if fault is None or (only is not None and fault is not only):
                return
            self._fault_timer = None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if fault.mode == "refuse" and self._port is not None:
            self._listen(self._port)
        with self._cond:
            self._fault = None
            if self.faults:
                self.faults[-1] = FaultPeriod(fault.mode, fault.since, time.monotonic())
            self._cond.notify_all()

    @property
    def faulty(self) -> bool:
        """Whether a fault is on now."""
        with self._cond:
            return self._fault is not None

    def _current_fault(self) -> Fault | None:
        with self._cond:
            return self._fault

    def _rate_limited(self, method: str, args: dict[str, Any]) -> _Answer | None:
        every_s = self._rate_limits.get(method)
        if every_s is None:
            return None
        key = (method, str(args.get("channel") or ""))
        now = time.monotonic()
        last = self._last_accepted.get(key)
        if last is not None and now - last < every_s:
            body = {"ok": False, "error": "ratelimited"}
            return _Answer(body, 429, {"Retry-After": "1"}, injected=True)
        self._last_accepted[key] = now
        return None

    def wait_for(self, predicate: Callable[[SlackFake], T], timeout: float = 10.0) -> T:
        """Block until ``predicate(fake)`` is truthy and return its value.

        Re-evaluated (under the lock) each time a request arrives, never by polling. On timeout
        raises AssertionError listing what was recorded, which is what a failing test needs.
        """
        name = getattr(predicate, "__qualname__", repr(predicate))
        return wait_on(
            self._cond,
            lambda: predicate(self),
            timeout,
            f"SlackFake.wait_for({name})",
            self.summary,
        )

    def summary(self) -> str:
        """Human-readable log of the calls, responses and rejections recorded so far."""
        with self._cond:
            start = self.calls[0].at if self.calls else 0.0
            lines = [f"{len(self.calls)} API call(s):"]
            for call in self.calls:
                outcome = call.error or "ok"
                lines.append(
                    f"  +{call.at - start:.3f}s {call.method} -> {call.status} {outcome} "
                    f"{_brief(call.args)}"
                )
            lines.append(f"{len(self.upload_posts)} upload(s): {', '.join(self.upload_posts)}")
            lines.append(f"{len(self.responses)} response_url post(s):")
            lines += [f"  {_brief(r)}" for r in self.responses]
            lines.append(f"{len(self.rejected)} rejection(s):")
            lines += [f"  {r}" for r in self.rejected]
            return "\n".join(lines)

    # -- request handling (called from server threads) -------------------------------------

    def _answer_api(
        self, method: str, query: str, body: bytes, content_type: str, authorization: str
    ) -> _Answer:
        with self._cond:
            args: dict[str, Any] = {}
            token: str | None = None
            fault = self._fault
            try:
                args, token = _decode_args(query, body, content_type, authorization)
                if fault is not None and fault.answers:
                    raw = fault.web_api_answer()
                    answer = _Answer({"error": fault.error}, raw[0], raw[1], True, raw=raw)
                else:
                    answer = self._dispatch(method, args, token)
            except _SlackError as e:
                answer = _Answer({"ok": False, "error": e.error, **e.extra})
            answer.drop = fault is not None and fault.mode == "drop"
            error = answer.body.get("error")
            call = ApiCall(method, args, token, time.monotonic(), answer.status, error)
            call.answered = not answer.drop
            answer.call = call
            self.calls.append(call)
            if error is not None and not answer.injected:
                detail = answer.body.get("errors")
                self.rejected.append(f"{method}: {error}" + (f" {detail}" if detail else ""))
            self._cond.notify_all()
            return answer

    def _dispatch(self, method: str, args: dict[str, Any], token: str | None) -> _Answer:
        handler = self._methods.get(method)
        if handler is None:
            raise _SlackError("unknown_method")
        if token is None:
            raise _SlackError("not_authed")
        if token not in (self.bot_token, self.app_token):
            raise _SlackError("invalid_auth")
        wanted = self.app_token if method in _APP_TOKEN_METHODS else self.bot_token
        if token != wanted:
            raise _SlackError("not_allowed_token_type")
        limited = self._rate_limited(method, args)
        if limited is not None:
            return limited
        queued = self._failures.get(method)
        if queued:
            failure = queued.pop(0)
            rate_limited = failure.error == "ratelimited"
            headers = {}
            if rate_limited or failure.retry_after is not None:
                retry_after = 1 if failure.retry_after is None else failure.retry_after
                headers["Retry-After"] = str(retry_after)
            status = failure.status or (429 if rate_limited else 200)
            body = {"ok": False, "error": failure.error}
            return _Answer(body, status, headers, injected=True)
        return _Answer({"ok": True, **handler(args)})

    def _answer_response(self, url_id: str, body: bytes) -> tuple[int, str]:
        with self._cond:
            status, text = self._respond(url_id, body)
            if status != 200:
                self.rejected.append(f"response_url {url_id}: {status} {text}")
            self._cond.notify_all()
            return status, text

    def _faulted(self, what: str) -> Fault | None:
        """The fault a response_url or upload request meets now, noted (None: none)."""
        with self._cond:
            fault = self._fault
            if fault is not None:
                self.faulted.append(f"{what}: {fault.mode}")
                self._cond.notify_all()
            return fault

    def _respond(self, url_id: str, body: bytes) -> tuple[int, str]:
        uses_left = self._response_urls.get(url_id)
        if uses_left is None:
            return 404, "expired_url"
        if uses_left == 0:
            return 404, "used_url"
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return 400, "invalid_payload"
        if not payload.get("delete_original"):
            try:
                _check_content(payload)
            except _SlackError as e:
                return 400, e.error
        self._response_urls[url_id] = uses_left - 1
        self.responses.append({**payload, "url": f"{self.base_url}/response/{url_id}"})
        return 200, "ok"

    def _answer_upload(self, file_id: str, body: bytes) -> tuple[int, str]:
        """The upload URL: raw bytes, exactly the length announced; Slack answers 'OK - <n>'."""
        with self._cond:
            pending = self._uploads.get(file_id)
            if pending is None or pending.content is not None:
                status, text = 404, "upload_url_not_found"
            elif len(body) != pending.length:
                status, text = 400, f"length_mismatch: announced {pending.length}, got {len(body)}"
            else:
                pending.content = body
                status, text = 200, f"OK - {len(body)}"
            self.upload_posts.append(f"{file_id} {status} {len(body)} bytes")
            if status != 200:
                self.rejected.append(f"upload {file_id}: {status} {text}")
            self._cond.notify_all()
            return status, text

    # -- Web API methods -------------------------------------------------------------------

    def _new_ts(self) -> str:
        micros = self._next_ts
        self._next_ts += 100
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://eventmesh-test.slack.com/",
            "team": "EventMesh Test",
            "user": "eventmesh-bot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        content = _check_content(args)
        ts = self._new_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "text": content.pop("text", ""),
            "ts": ts,
        }
        message.update((k, v) for k, v in content.items() if v != [])
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        if args.get("metadata") is not None:
            message["metadata"] = _metadata(args["metadata"])
        self.messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        """Slack semantics: a field left out keeps its old value; ``blocks=[]`` removes blocks."""
        channel = _channel(args)
        ts = str(args.get("ts") or "")
        message = self.messages.get((channel, ts))
        if message is None:
            raise _SlackError("message_not_found")
        for key, value in _check_content(args).items():
            if value == []:
                message.pop(key, None)
            else:
                message[key] = value
        return {
            "channel": channel,
            "ts": ts,
            "text": message["text"],
            "message": copy.deepcopy(message),
        }

    def _get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        ts = str(args.get("message_ts") or "")
        if (channel, ts) not in self.messages:
            raise _SlackError("message_not_found")
        link = f"https://eventmesh-test.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return {"channel": channel, "permalink": link}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        _channel(args)
        if not _USER_ID.match(str(args.get("user") or "")):
            raise _SlackError("user_not_found")
        _check_content(args)
        return {"message_ts": self._new_ts()}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = [u.strip() for u in str(args.get("users") or "").split(",") if u.strip()]
        if not users:
            raise _SlackError("users_list_not_supplied")
        if not all(_USER_ID.match(u) for u in users):
            raise _SlackError("user_not_found")
        if len(users) == 1:
            return {"channel": {"id": _dm_id(users[0])}}
        digest = hashlib.sha1(",".join(sorted(users)).encode()).hexdigest()[:10].upper()
        return {"channel": {"id": f"G{digest}"}}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        if not channel or channel in self.missing:
            raise _SlackError("channel_not_found")
        names = {channel_id: name for name, channel_id in self.named_channels.items()}
        name = names.get(channel, channel.lower())
        return {
            "channel": {
                "id": channel,
                "name": name,
                "is_channel": True,
                "is_private": False,
                "is_archived": False,
                "is_member": channel not in self.not_joined,
            }
        }

    def _page(self, items: list[dict[str, Any]], key: str, args: dict[str, Any]) -> dict[str, Any]:
        """One page of a cursor-paginated list method; the cursor is the next item's index."""
        limit = min(int(args.get("limit") or 100), self.page_size)
        cursor = str(args.get("cursor") or "")
        if cursor and not cursor.startswith("next:"):
            raise _SlackError("invalid_cursor")
        start = int(cursor.removeprefix("next:") or 0)
        following = start + limit
        next_cursor = f"next:{following}" if following < len(items) else ""
        return {key: items[start:following], "response_metadata": {"next_cursor": next_cursor}}

    def _conversations_list(self, args: dict[str, Any]) -> dict[str, Any]:
        types = set(str(args.get("types") or "public_channel").split(","))
        if not types & {"public_channel", "private_channel"}:
            return self._page([], "channels", args)
        channels = [
            {"id": channel_id, "name": name, "is_channel": True, "is_archived": False}
            for name, channel_id in self.named_channels.items()
        ]
        return self._page(channels, "channels", args)

    def _users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._page([copy.deepcopy(p) for p in self.people.values()], "members", args)

    def _users_lookup_by_email(self, args: dict[str, Any]) -> dict[str, Any]:
        email = str(args.get("email") or "").lower()
        for person in self.people.values():
            if str(person["profile"].get("email") or "").lower() == email:
                return {"user": copy.deepcopy(person)}
        raise _SlackError("users_not_found")

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        """A single-use WebSocket URL; without a Socket Mode server attached, an error.

        ``socket_mode_not_enabled`` is the fake's own word for "the test attached no
        ``SocketModeFake``", so the rejection log says what is missing.
        """
        if self.socket_mode is None:
            raise _SlackError("socket_mode_not_enabled")
        return {"url": self.socket_mode.connection_url()}

    def _get_upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = str(args.get("filename") or "")
        length = str(args.get("length") or "")
        if not filename or not length.isdigit() or int(length) <= 0:
            raise _SlackError("invalid_arguments")
        if len(str(args.get("alt_txt") or "")) > MAX_ALT_TEXT:
            raise _SlackError("alt_txt_too_large")
        file_id = f"F{self._next_file}"
        self._next_file += 1
        self._uploads[file_id] = _PendingUpload(filename, int(length))
        return {"upload_url": f"{self.base_url}/upload/v1/{file_id}", "file_id": file_id}

    def _complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        """Share uploaded files: each must have been uploaded, and is completed only once."""
        files = args.get("files")
        if not isinstance(files, list) or not files:
            raise _SlackError("invalid_arguments")
        channel_id = args.get("channel_id")
        channel = _channel({"channel": channel_id}) if channel_id else None  # None: not shared
        pending = []
        for item in files:
            file_id = item.get("id") if isinstance(item, dict) else None
            upload = self._uploads.get(str(file_id))
            if upload is None or upload.content is None:
                raise _SlackError("file_not_found")
            pending.append((str(file_id), str(item.get("title") or upload.filename), upload))
        shared = []
        for file_id, title, upload in pending:
            del self._uploads[file_id]
            png = upload.content is not None and upload.content.startswith(b"\x89PNG\r\n\x1a\n")
            record = {
                "id": file_id,
                "name": upload.filename,
                "title": title,
                "mimetype": "image/png" if png else "application/octet-stream",
                "filetype": "png" if png else "binary",
                "size": upload.length,
                "user": BOT_USER_ID,
                "channels": [channel] if channel else [],
            }
            self.files[file_id] = {**record, "content": upload.content}
            shared.append(record)
        if channel is not None:
            ts = self._new_ts()
            message: dict[str, Any] = {
                "type": "message",
                "user": BOT_USER_ID,
                "text": str(args.get("initial_comment") or ""),
                "files": copy.deepcopy(shared),
                "upload": True,
                "ts": ts,
            }
            if args.get("thread_ts"):
                message["thread_ts"] = str(args["thread_ts"])
            self.messages[(channel, ts)] = message
        return {"files": shared}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """A conversation's messages, newest first: no thread replies, metadata only with
        ``include_all_metadata``; ``oldest``/``latest`` (exclusive), ``limit`` and a cursor."""
        channel = _channel(args)
        top = [
            m
            for (ch, ts), m in self.messages.items()
            if ch == channel and m.get("thread_ts", ts) == ts
        ]
        oldest, latest = _ts_bound(args.get("oldest"), 0.0), _ts_bound(args.get("latest"), 1e12)
        shown = [m for m in reversed(top) if oldest < float(m["ts"]) < latest]
        return _page_of(shown, args)

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent, then its replies, oldest first (metadata as in history)."""
        channel = _channel(args)
        ts = str(args.get("ts") or "")
        if (channel, ts) not in self.messages:
            raise _SlackError("thread_not_found")
        thread = [
            m
            for (ch, m_ts), m in self.messages.items()
            if ch == channel and (m_ts == ts or m.get("thread_ts") == ts)
        ]
        return _page_of(thread, args)

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        """A Home tab view for one user, checked as Slack checks it, replacing their last one."""
        user_id = str(args.get("user_id") or "")
        if not _USER_ID.match(user_id):
            raise _invalid_arguments(["invalid `user_id`"])
        view = args.get("view")
        if not isinstance(view, dict):
            raise _invalid_arguments(["`view` must be a JSON object"])
        if view.get("type") != "home":
            raise _invalid_arguments([f"views.publish takes type home, not {view.get('type')!r}"])
        if len(json.dumps(view)) > MAX_VIEW_BYTES:
            raise _SlackError("view_too_large")
        errors = block_kit_errors(view.get("blocks"), MAX_VIEW_BLOCKS)
        if errors:
            raise _invalid_arguments(errors)
        self.homes[user_id] = copy.deepcopy(view)
        view_id = "V" + hashlib.sha1(user_id.encode()).hexdigest()[:10].upper()
        return {"view": {"id": view_id, "team_id": TEAM_ID, **copy.deepcopy(view)}}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args.get("user") or "")
        if not _USER_ID.match(user_id) or user_id in self.missing:
            raise _SlackError("user_not_found")
        name = user_id.lower()
        real_name = f"Test User {user_id}"
        return {
            "user": {
                "id": user_id,
                "team_id": TEAM_ID,
                "name": name,
                "real_name": real_name,
                "is_bot": user_id == BOT_USER_ID,
                "tz": "UTC",
                "tz_label": "Coordinated Universal Time",
                "tz_offset": 0,
                "profile": {"real_name": real_name, "display_name": name},
            }
        }


def _metadata(value: object) -> dict[str, Any]:
    """Slack's message metadata: an ``event_type`` and an object ``event_payload``."""
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("event_type"), str)
        or not isinstance(value.get("event_payload"), dict)
    ):
        raise _SlackError("invalid_metadata_format")
    return {"event_type": value["event_type"], "event_payload": value["event_payload"]}


def _ts_bound(value: object, default: float) -> float:
    try:
        return float(str(value)) if value not in (None, "") else default
    except ValueError:
        raise _SlackError("invalid_ts_oldest") from None


def _page_of(messages: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
    """One page of messages as Slack pages them (``limit``, an opaque ``cursor``)."""
    try:
        limit = min(999, max(1, int(args.get("limit") or 100)))
        start = int(str(args.get("cursor") or "0").removeprefix("next:"))
    except ValueError:
        raise _SlackError("invalid_cursor") from None
    with_metadata = str(args.get("include_all_metadata") or "").lower() in ("1", "true")
    page = [copy.deepcopy(m) for m in messages[start : start + limit]]
    if not with_metadata:
        for message in page:
            message.pop("metadata", None)
    more = start + limit < len(messages)
    return {
        "messages": page,
        "has_more": more,
        "response_metadata": {"next_cursor": f"next:{start + limit}" if more else ""},
    }


def _decode_args(
    query: str, body: bytes, content_type: str, authorization: str
) -> tuple[dict[str, Any], str | None]:
    """Merge query, form and JSON arguments the way Slack reads them; split off the token."""
    args: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if body and content_type.startswith("application/json"):
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _SlackError("invalid_json")
        args.update(parsed)
    elif body:
        args.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    for key in _JSON_ARGS:
        if isinstance(args.get(key), str):
            with contextlib.suppress(ValueError):  # left as text, reported as not a list
                args[key] = json.loads(args[key])
    form_token = args.pop("token", None)
    if authorization.startswith("Bearer "):
        return args, authorization.removeprefix("Bearer ").strip()
    return args, form_token


def _check_content(args: dict[str, Any]) -> dict[str, Any]:
    """Check text/blocks like Slack and return those given (``blocks`` may be ``[]``)."""
    content = {k: args[k] for k in ("text", "blocks", "attachments") if args.get(k) is not None}
    if not content.get("text") and not content.get("blocks") and not content.get("attachments"):
        raise _SlackError("no_text")
    text = content.get("text")
    if text is not None and len(str(text)) > MAX_MESSAGE_TEXT:
        raise _SlackError("msg_too_long")
    if "blocks" in content:
        errors = block_kit_errors(content["blocks"])
        if errors:
            messages = [f"[ERROR] {e}" for e in errors]
            raise _SlackError(
                "invalid_blocks", errors=errors, response_metadata={"messages": messages}
            )
    return content


def _invalid_arguments(errors: list[str]) -> _SlackError:
    """Slack's answer to a view it cannot take: the problems in response_metadata."""
    messages = [f"[ERROR] {e}" for e in errors]
    return _SlackError("invalid_arguments", errors=errors, response_metadata={"messages": messages})


def _channel(args: dict[str, Any]) -> str:
    """The channel a message goes to; a user id means that user's DM, as in Slack."""
    channel = args.get("channel")
    if not isinstance(channel, str) or not channel:
        raise _SlackError("channel_not_found")
    return _dm_id(channel) if _USER_ID.match(channel) else channel


def _dm_id(user_id: str) -> str:
    return "D" + user_id[1:]


def _brief(args: dict[str, Any]) -> str:
    keys = (
        "channel",
        "channel_id",
        "ts",
        "thread_ts",
        "user",
        "user_id",
        "url",
        "filename",
        "length",
    )
    shown = {k: args[k] for k in keys if k in args}
    if "text" in args:
        shown["text"] = str(args["text"])[:80]
    if isinstance(args.get("blocks"), list):
        shown["blocks"] = f"<{len(args['blocks'])} blocks>"
    view = args.get("view")
    if isinstance(view, dict):
        shown["view"] = f"<{view.get('type')} view, {len(view.get('blocks') or [])} blocks>"
    return json.dumps(shown)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: SlackFake


class _Handler(BaseHTTPRequestHandler):
    """Routes ``/api/<method>`` to the Web API and ``/response/<id>`` to response_urls."""

    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._route(self.rfile.read(length))

    def do_GET(self) -> None:  # AsyncWebClient sends users.info etc. as GET with a query
        self._route(b"")

    def _route(self, body: bytes) -> None:
        url = urlsplit(self.path)
        fake = self.server.fake
        api = f"/{fake.instance}/api/"
        if url.path.startswith(api):
            answer = fake._answer_api(
                url.path.removeprefix(api),
                url.query,
                body,
                self.headers.get("Content-Type", ""),
                self.headers.get("Authorization", ""),
            )
            hook = fake.on_call
            if hook is not None and answer.call is not None:
                hook(answer.call)
            if answer.drop:
                self._drop()
            elif answer.raw is not None:
                status, headers, raw, content_type = answer.raw
                self._send(status, raw, content_type, headers)
            else:
                payload = json.dumps(answer.body).encode()
                json_type = "application/json; charset=utf-8"
                self._send(answer.status, payload, json_type, answer.headers)
            return
        if url.path.startswith(("/upload/v1/", "/response/")):
            fault = fake._faulted(url.path)
            if fault is not None and fault.answers:
                status, headers, raw, content_type = fault.plain_answer()
                self._send(status, raw, content_type, headers)
                return
            if url.path.startswith("/response/"):
                status, text = fake._answer_response(url.path.removeprefix("/response/"), body)
                content_type = "text/html"
            elif self.command == "POST":
                status, text = fake._answer_upload(url.path.removeprefix("/upload/v1/"), body)
                content_type = "text/plain; charset=utf-8"
            else:
                status, text, content_type = 404, "not found", "text/plain"
            if fault is not None:  # a drop: carried out, never answered
                self._drop()
            else:
                self._send(status, text.encode(), content_type, {})
            return
        self._send(404, b"not found", "text/plain", {})

    def _drop(self) -> None:
        """Close the connection without a word, as a dying proxy does after forwarding."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str]
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the default per-request stderr log out of test output."""
