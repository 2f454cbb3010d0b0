"""The App Home: Slack's app_home_opened event publishes the viewer's Home tab."""

from __future__ import annotations

from bot.slack.dispatch import Context, EventRequest, event


@event("app_home_opened")
async def home_opened(ctx: Context) -> None:
    """Someone opened the bot's Home tab: show them everything, and keep it current."""
    request = ctx.request
    assert isinstance(request, EventRequest)
    await ctx.ack()
    if request.event.get("tab") != "home":
        ctx.result = "the Messages tab: nothing to publish"
        return
    # The event carries the view Slack shows them, if one was ever published.
    showing = bool(request.event.get("view"))
    ctx.hand_off(lambda: ctx.services.home.opened(ctx.user_id, showing=showing))
