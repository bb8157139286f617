"""The retention cleaner's loop and its settings, on the in-memory store with a fake clock."""

from __future__ import annotations

import asyncio
import os

import pytest

from hookline import ids, retention, settings
from hookline.models import Application, Message, Page
from hookline.store.base import EXPIRED_PAYLOAD, ExpiryBatch, MessageFilter
from hookline.store.memory import MemoryStore

DAY = 86400.0
T0 = 1_900_000_000.0  # the fake clock's start, epoch seconds


class ClockedStore(MemoryStore):
    """The memory store on a clock the test moves."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = T0

    def now(self) -> float:
        return self.clock


class Naps:
    """Records the pauses asked for; says "stop" once ``stop_after`` naps were taken."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.seconds: list[float] = []
        self._stop_after = stop_after

    async def __call__(self, seconds: float) -> bool:
        self.seconds.append(seconds)
        return self._stop_after is not None and len(self.seconds) >= self._stop_after


async def store_with(count: int, *, created: float, retention_days: float) -> ClockedStore:
    store = ClockedStore()
    org = await store.ensure_org("acme", T0)
    app = Application(id=ids.new(ids.APP), org_id=org.id, name="a", created_at=T0, updated_at=T0)
    await store.create_app(app)
    for i in range(count):
        at = created + i
        raw = int(at * 1000).to_bytes(6, "big") + os.urandom(10)
        await store.create_message(
            Message(
                id=f"{ids.MESSAGE}_{ids.base32_of(raw)}",
                app_id=app.id,
                event_type="e",
                payload=b"{}",
                created_at=at,
                expires_at=at + retention_days * DAY,
            )
        )
    return store


async def payloads(store: MemoryStore) -> list[bytes]:
    """Every message's payload, oldest first (read through the Protocol)."""
    found = await store.list_messages(next(iter(store._apps)), MessageFilter(), Page(limit=100))
    return [m.payload for m in sorted(found, key=lambda m: m.id)]


async def test_a_sweep_expires_what_is_due_in_batches_with_a_pause_between() -> None:
    store = await store_with(5, created=T0 - 10 * DAY, retention_days=1)
    store.clock = T0
    naps = Naps()
    cleaner = retention.Cleaner(store, payload_retention_days=1, batch_size=2)

    expired, pruned = await cleaner.sweep(naps)

    assert (expired.done, expired.skipped, expired.batches, expired.interrupted) == (5, 0, 3, False)
    assert pruned == retention.Totals()  # no message retention set: nothing is deleted
    assert await payloads(store) == [EXPIRED_PAYLOAD] * 5
    assert len(naps.seconds) == 2  # between the three batches, not after the last
    assert all(s >= retention.MIN_PAUSE_SECONDS for s in naps.seconds)
    assert await store.count_messages_before(T0) == 5


async def test_nothing_is_due_before_its_time() -> None:
    store = await store_with(3, created=T0, retention_days=0.5)
    store.clock = T0 + 0.5 * DAY - 1  # a second before the first is due
    expired, _ = await retention.Cleaner(store, payload_retention_days=90).sweep(Naps())
    assert expired.done == 0
    store.clock = T0 + 0.5 * DAY + 1.5  # the first two are due now
    expired, _ = await retention.Cleaner(store, payload_retention_days=90).sweep(Naps())
    assert expired.done == 2
    assert await payloads(store) == [EXPIRED_PAYLOAD, EXPIRED_PAYLOAD, b"{}"]


async def test_a_stop_between_batches_ends_the_sweep_after_the_batch_in_hand() -> None:
    store = await store_with(5, created=T0 - 10 * DAY, retention_days=1)
    cleaner = retention.Cleaner(
        store, payload_retention_days=1, message_retention_days=2, batch_size=2
    )
    expired, pruned = await cleaner.sweep(Naps(stop_after=1))
    assert (expired.done, expired.batches, expired.interrupted) == (2, 1, True)
    assert pruned == retention.Totals()  # not started once stopped
    assert await payloads(store) == [EXPIRED_PAYLOAD] * 2 + [b"{}"] * 3


async def test_with_message_retention_old_messages_are_deleted_after_expiry() -> None:
    store = await store_with(4, created=T0 - 3 * DAY, retention_days=1)
    cleaner = retention.Cleaner(
        store, payload_retention_days=1, message_retention_days=2.5, batch_size=3
    )
    expired, pruned = await cleaner.sweep(Naps())
    assert (expired.done, pruned.done, pruned.batches) == (4, 4, 2)
    assert await store.count_messages_before(T0) == 0


async def test_prune_reports_every_batch_to_its_caller() -> None:
    store = await store_with(3, created=T0 - 3 * DAY, retention_days=90)
    seen: list[int] = []
    totals = await retention.prune(
        store,
        T0 - DAY,
        batch_size=2,
        nap=Naps(),
        on_batch=lambda b: seen.append(b.deleted + b.skipped),
    )
    assert (totals.done, totals.batches, seen) == (3, 2, [2, 1])


def test_the_pause_is_at_least_as_long_as_the_batch_took() -> None:
    assert retention.pause_after(0.001) == retention.MIN_PAUSE_SECONDS
    assert retention.pause_after(0.4) == 0.4


async def test_run_goes_on_after_a_failed_pass_and_ends_when_stopped() -> None:
    class Flaky(ClockedStore):
        calls = 0

        async def expire_payloads(
            self, now: float, default_seconds: float, limit: int, after: float | None = None
        ) -> ExpiryBatch:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("disk on fire")
            return ExpiryBatch()

    store = Flaky()
    stop = asyncio.Event()
    cleaner = retention.Cleaner(store, payload_retention_days=1, interval=0.01)
    task = asyncio.create_task(cleaner.run(stop))
    await asyncio.sleep(0.05)
    assert store.calls == 1  # failed, and now waits ERROR_PAUSE_SECONDS, not the interval
    assert not task.done()  # the failure was logged, not raised
    stop.set()
    await asyncio.wait_for(task, 1)  # a stop ends the wait at once


async def test_run_passes_every_interval() -> None:
    store = ClockedStore()
    stop = asyncio.Event()
    calls = 0
    original = store.expire_payloads

    async def counting(
        now: float, default_seconds: float, limit: int, after: float | None = None
    ) -> ExpiryBatch:
        nonlocal calls
        calls += 1
        return await original(now, default_seconds, limit, after)

    store.expire_payloads = counting  # type: ignore[method-assign]
    task = asyncio.create_task(
        retention.Cleaner(store, payload_retention_days=1, interval=0.02).run(stop)
    )
    await asyncio.sleep(0.15)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert 3 <= calls <= 9


# settings ----------------------------------------------------------------------------------------


def test_retention_settings_take_fractions_and_refuse_nonsense() -> None:
    s = settings.load(
        env={
            "HOOKLINE_PAYLOAD_RETENTION_DAYS": "0.00005",
            "HOOKLINE_MESSAGE_RETENTION_DAYS": "1.5",
            "HOOKLINE_RETENTION_INTERVAL": "0.5",
        }
    )
    assert (s.payload_retention_days, s.message_retention_days, s.retention_interval) == (
        0.00005,
        1.5,
        0.5,
    )
    defaults = settings.load(env={})
    assert (defaults.payload_retention_days, defaults.message_retention_days) == (90.0, None)
    assert defaults.retention_interval == 60.0


@pytest.mark.parametrize(
    "name", ["PAYLOAD_RETENTION_DAYS", "MESSAGE_RETENTION_DAYS", "RETENTION_INTERVAL"]
)
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "ninety"])
def test_a_retention_setting_that_is_not_a_positive_number_is_refused(
    name: str, value: str
) -> None:
    with pytest.raises(ValueError, match=f"HOOKLINE_{name}"):
        settings.load(env={f"HOOKLINE_{name}": value})
