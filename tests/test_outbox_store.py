"""The outbox's rows and the posting leases in the store, on SQLite and PostgreSQL: a key is
written once, one sender holds a row at a time, a row whose holder died is in doubt, a newer
update supersedes a waiting one, replies expire; one replica posts about a subject at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.slack.posting_lease import LeaseLost, posting_lease
from bot.store import LANE_PAGE, NewDelivery, Store
from bot.store.outbox import DROPPED, EXPIRED, SENT, UPDATE, WAITING, PostingLeaseRecord
from tests.support.clock import ManualClock

LEASE = timedelta(seconds=15)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(store_url: str, clock: ManualClock) -> Iterator[Store]:
    store = Store(store_url, clock=clock)
    yield store
    store.close()


def page(key: str = "INC-1/page/1/U0ONCALL", **fields: object) -> NewDelivery:
    return NewDelivery(key=key, kind="incident.page", lane=LANE_PAGE, user_id="U0ONCALL", **fields)  # type: ignore[arg-type]


def test_a_key_is_written_once_and_a_waiting_row_takes_the_newest_content(store: Store) -> None:
    first = store.enqueue_delivery(page(text="level 1"))
    again = store.enqueue_delivery(page(text="level 2"))
    assert again.id == first.id and again.text == "level 2"
    held = store.enqueue_delivery(page(text="level 3"), claim_for="bot-a", lease=LEASE)
    assert held.claimed_by == "bot-a" and held.attempts == 1
    # Held by a sender: what it sends is what it read; the content stays.
    assert store.enqueue_delivery(page(text="level 4"), claim_for="bot-b").text == "level 3"
    assert store.finish_delivery(held.id, "bot-a", SENT, channel="D0ONCALL", ts="1.000100")
    sent = store.delivery(held.key)
    assert sent is not None and (sent.state, sent.sent_ts) == (SENT, "1.000100")
    assert store.enqueue_delivery(page(text="level 5")).state == SENT  # never sent twice


def test_one_sender_at_a_time_and_a_dead_senders_row_is_in_doubt(
    store: Store, clock: ManualClock
) -> None:
    row = store.enqueue_delivery(page())
    assert store.claim_delivery(row.id, "bot-a", LEASE) is not None
    assert store.claim_delivery(row.id, "bot-b", LEASE) is None
    assert store.claim_delivery(row.id, "bot-a", LEASE) is None  # not twice by one either
    clock.advance(seconds=16)  # bot-a died mid-send: its claim ran out
    taken = store.claim_delivery(row.id, "bot-b", LEASE)
    assert taken is not None and taken.in_doubt and taken.attempts == 2
    store.retry_delivery(
        row.id, "bot-b", next_try_at=clock(), in_doubt=False, error="connection refused"
    )
    retried = store.claim_delivery(row.id, "bot-c", LEASE)
    assert retried is not None and not retried.in_doubt  # released properly: no doubt


def test_a_newer_update_supersedes_the_waiting_ones(store: Store) -> None:
    def edit(n: int) -> NewDelivery:
        return NewDelivery(
            key=f"edit/{n}", kind="reply", op=UPDATE, channel="C1", ts="1.000100", text=str(n)
        )

    old = store.enqueue_delivery(edit(1))
    held = store.enqueue_delivery(edit(2), claim_for="bot-a", lease=LEASE)
    store.enqueue_delivery(edit(3))
    states = {d.key: d.state for d in store.waiting_deliveries()}
    assert states == {"edit/2": WAITING, "edit/3": WAITING}  # the one being sent stays
    gone = store.delivery(old.key)
    assert gone is not None and gone.state == DROPPED
    assert held.claimed_by == "bot-a"


def test_replies_past_their_usefulness_expire_and_old_rows_are_pruned(
    store: Store, clock: ManualClock
) -> None:
    useful = clock() + timedelta(minutes=1)
    reply = store.enqueue_delivery(
        NewDelivery(key="r", kind="reply", channel="C1", text="ok", expires_at=useful)
    )
    assert store.expire_deliveries() == []
    assert store.outbox_backlog() == (1, reply.created_at)
    clock.advance(minutes=2)
    (expired,) = store.expire_deliveries()
    assert expired.key == "r" and expired.state == EXPIRED
    assert store.outbox_backlog() == (0, None)
    clock.advance(days=8)
    assert store.prune_deliveries(clock() - timedelta(days=7)) == 1
    assert store.delivery("r") is None


def test_one_replica_posts_about_a_subject_until_its_lease_runs_out(
    store: Store, clock: ManualClock
) -> None:
    assert store.take_posting_lease("alert-1", "bot-a", LEASE)
    assert store.take_posting_lease("alert-1", "bot-a", LEASE)  # renewed
    assert not store.take_posting_lease("alert-1", "bot-b", LEASE)
    assert store.take_posting_lease("alert-2", "bot-b", LEASE)  # another subject
    clock.advance(seconds=16)  # bot-a was killed: 15 s later it delays nothing
    assert store.take_posting_lease("alert-1", "bot-b", LEASE)
    store.release_posting_lease("alert-1", "bot-a")  # not its lease any more: no effect
    assert not store.take_posting_lease("alert-1", "bot-a", LEASE)
    store.release_posting_lease("alert-1", "bot-b")
    assert store.take_posting_lease("alert-1", "bot-a", LEASE)


def test_a_holder_whose_lease_was_taken_stops_and_is_told_to_try_later(store: Store) -> None:
    lease = timedelta(seconds=0.3)  # renewed every 0.1 s

    async def take() -> bool:
        return await asyncio.to_thread(store.take_posting_lease, "alert-1", "bot-a", lease)

    async def release() -> None:
        await asyncio.to_thread(store.release_posting_lease, "alert-1", "bot-a")

    async def stalled_then_overtaken() -> None:
        async with posting_lease("alert 1", take, release, lease):
            # Another replica takes over (as after this one stalled past its lease)...
            with store.engine.begin() as connection:
                connection.execute(
                    update(PostingLeaseRecord)
                    .where(PostingLeaseRecord.subject == "alert-1")
                    .values(owner="bot-b", until=store.clock() + timedelta(hours=1))
                )
            await asyncio.Event().wait()  # ...and its next renewal stops this work here

    with pytest.raises(LeaseLost, match="another bot took over"):
        asyncio.run(asyncio.wait_for(stalled_then_overtaken(), 10))
    assert not store.take_posting_lease("alert-1", "bot-a", lease)  # still bot-b's
