"""Slack's mrkdwn on a terminal: what the console prints for bold, code, links and mentions."""

from __future__ import annotations

import pytest

from bot.slack.console import TextRenderer

PLAIN = TextRenderer(color=False)
TERMINAL = TextRenderer(color=True)


@pytest.mark.parametrize(
    ("mrkdwn", "shown"),
    [
        ("*Deploy* of `v1.2_3` to _staging_", "Deploy of v1.2_3 to staging"),
        ("~cancelled~ by <@U0DEPLOY1>", "cancelled by @U0DEPLOY1"),
        ("posted in <#C0OPS|ops-alerts> and <#C0OTHER>", "posted in #ops-alerts and #C0OTHER"),
        (
            "<https://ci.example/runs/4_2|the run> · <https://x.example>",
            "the run (https://ci.example/runs/4_2) · https://x.example",
        ),
        ("<!here> :white_check_mark: :no_such_emoji:", "@here ✅ :no_such_emoji:"),
        # Not marks: inside words, around spaces, inside code and links.
        (
            "eventmesh_http_requests_total 2 * 3 * 4 a_b_",
            "eventmesh_http_requests_total 2 * 3 * 4 a_b_",
        ),
        ("`*not bold*` and ```\nrm -rf *_tmp_*\n```", "*not bold* and rm -rf *_tmp_*"),
        ("&lt;@U0X&gt; typed by someone &amp; escaped", "<@U0X> typed by someone & escaped"),
        ("*Acknowledged by <@U0ONCALL>* at 10:30:00", "Acknowledged by @U0ONCALL at 10:30:00"),
    ],
)
def test_mrkdwn_reads_as_text(mrkdwn: str, shown: str) -> None:
    assert PLAIN.mrkdwn(mrkdwn) == shown


def test_on_a_terminal_the_marks_become_its_own_styles_and_nest() -> None:
    text = TERMINAL.mrkdwn("*INC-3 `SEV 1`* _paged_ ~gone~")
    assert text == (
        "\x1b[1mINC-3 \x1b[36mSEV 1\x1b[39m\x1b[22m \x1b[3mpaged\x1b[23m \x1b[9mgone\x1b[29m"
    )
