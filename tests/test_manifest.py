"""manifest.yml declares exactly the slash commands and events the bot answers."""

from __future__ import annotations

import yaml

from handlers import COMMANDS, EVENTS
from tests.conftest import REPO, BotProcess

MANIFEST = yaml.safe_load((REPO / "manifest.yml").read_text())


def manifest_commands() -> set[str]:
    return {c["command"] for c in MANIFEST["features"]["slash_commands"]}


def test_manifest_lists_exactly_the_registered_commands() -> None:
    assert manifest_commands() == {spec.name for spec in COMMANDS}


def test_every_manifest_command_is_answered_by_the_running_bot(bot: BotProcess) -> None:
    for command in manifest_commands():
        sent = bot.command(command, "help")
        assert sent.response.status_code == 200, command
        reply = sent.response.json()
        assert reply["response_type"] == "ephemeral"
        assert reply["text"].startswith(f"Usage: {command}")


def test_manifest_is_socket_mode_with_interactivity_and_needed_scopes() -> None:
    settings = MANIFEST["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"]["is_enabled"] is True
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "im:write"} <= scopes  # im:write: pages are DMs
    for command in MANIFEST["features"]["slash_commands"]:
        assert command["usage_hint"] and command["description"]
        assert "url" not in command  # Socket Mode: Slack delivers over the socket


def test_manifest_has_the_home_tab_and_subscribes_to_exactly_the_handled_events() -> None:
    home = MANIFEST["features"]["app_home"]
    assert home["home_tab_enabled"] is True and home["messages_tab_enabled"] is True
    events = MANIFEST["settings"]["event_subscriptions"]["bot_events"]
    assert set(events) == {spec.event_type for spec in EVENTS} == {"app_home_opened"}
    # app_home_opened and views.publish need no scope: the bot asks for no more than before.
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert not any(scope.startswith(("views", "app_home")) for scope in scopes)


def test_manifest_lets_the_bot_look_for_its_own_messages_everywhere_it_posts() -> None:
    # A post whose answer was lost is looked for in conversations.history / .replies (by the
    # key in its metadata) before it is sent again: that needs each conversation type's scope.
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert {"channels:history", "groups:history", "im:history", "mpim:history"} <= scopes
