"""Idempotency keys: who owns a key, who waits, who gets the replay, and when keys expire."""

from __future__ import annotations

import time

import pytest

from hookline import errors
from hookline.models import Application, ClaimPolicy, Page, StoredResponse
from hookline.store import sqlite
from hookline.store.base import IdempotentWrite, MessageFilter, Store

from .conftest import LEASE, add_endpoint, make_message

LOCK = 30.0  # seconds a request may hold a key before another may take it over
KEEP = 86400.0  # seconds a finished answer is replayed

ACCEPTED = StoredResponse(status=202, body=b'{"id":"msg_1","eventType":"invoice.paid"}')


def finished(key: str, now: float, response: StoredResponse = ACCEPTED) -> IdempotentWrite:
    return IdempotentWrite(key=key, response=response, expires_at=now + KEEP)


async def state(store: Store, key: str, fingerprint: str, now: float) -> str:
    return (await store.idempotency_begin(key, fingerprint, now, LOCK)).state


async def test_first_caller_owns_a_new_key(store: Store) -> None:
    begun = await store.idempotency_begin("k", "fp", time.time(), LOCK)
    assert begun.state == "owner"
    assert begun.response is None


async def test_repeat_while_the_owner_works_must_wait(store: Store) -> None:
    now = time.time()
    assert await state(store, "k", "fp", now) == "owner"
    assert await state(store, "k", "fp", now + LOCK - 1) == "pending"


async def test_different_request_with_the_same_key_is_a_mismatch(store: Store) -> None:
    now = time.time()
    assert await state(store, "k", "fp-a", now) == "owner"
    assert await state(store, "k", "fp-b", now + 1) == "mismatch"
    await store.idempotency_finish(finished("k", now))
    assert await state(store, "k", "fp-b", now + 2) == "mismatch"


async def test_finished_key_replays_the_stored_response(store: Store) -> None:
    now = time.time()
    await store.idempotency_begin("k", "fp", now, LOCK)
    await store.idempotency_finish(finished("k", now))
    replay = await store.idempotency_begin("k", "fp", now + 60, LOCK)
    assert replay.state == "done"
    assert replay.response == ACCEPTED


async def test_keys_are_independent(store: Store) -> None:
    now = time.time()
    assert await state(store, "k1", "fp", now) == "owner"
    assert await state(store, "k2", "fp", now) == "owner"
    await store.idempotency_finish(finished("k1", now))
    assert await state(store, "k2", "fp", now) == "pending"


async def test_stalled_owner_is_taken_over_after_its_lock(store: Store) -> None:
    now = time.time()
    assert await state(store, "k", "fp", now) == "owner"
    assert await state(store, "k", "fp", now + LOCK) == "owner"
    # The new owner holds a fresh lock.
    assert await state(store, "k", "fp", now + LOCK + 1) == "pending"
    assert await state(store, "k", "fp", now + 2 * LOCK) == "owner"


async def test_a_crashed_owners_key_is_free_for_any_request(store: Store) -> None:
    now = time.time()
    assert await state(store, "k", "fp-a", now) == "owner"
    # Nothing was committed under the key, so a different body may claim it once the lock ends.
    assert await state(store, "k", "fp-b", now + LOCK) == "owner"
    assert await state(store, "k", "fp-a", now + LOCK + 1) == "mismatch"


async def test_release_lets_the_next_request_own_the_key(store: Store) -> None:
    now = time.time()
    await store.idempotency_begin("k", "fp-a", now, LOCK)
    await store.idempotency_release("k")
    # Even a different body may use the key now: nothing was ever answered for it.
    assert await state(store, "k", "fp-b", now + 1) == "owner"


async def test_release_does_not_forget_a_finished_answer(store: Store) -> None:
    now = time.time()
    await store.idempotency_begin("k", "fp", now, LOCK)
    await store.idempotency_finish(finished("k", now))
    await store.idempotency_release("k")
    assert await state(store, "k", "fp", now + 1) == "done"


async def test_release_of_an_unknown_key_is_harmless(store: Store) -> None:
    await store.idempotency_release("never-seen")
    assert await state(store, "never-seen", "fp", time.time()) == "owner"


async def test_expired_answer_frees_the_key(store: Store) -> None:
    now = time.time()
    await store.idempotency_begin("k", "fp-a", now, LOCK)
    await store.idempotency_finish(finished("k", now))
    assert await state(store, "k", "fp-a", now + KEEP - 1) == "done"
    assert await state(store, "k", "fp-b", now + KEEP) == "owner"
    assert await state(store, "k", "fp-b", now + KEEP + 1) == "pending"


async def test_finish_overwrites_with_the_final_answer(store: Store) -> None:
    now = time.time()
    await store.idempotency_begin("k", "fp", now, LOCK)
    conflict = StoredResponse(status=409, body=b'{"code":"conflict","detail":"dup"}')
    await store.idempotency_finish(finished("k", now, conflict))
    replay = await store.idempotency_begin("k", "fp", now + 1, LOCK)
    assert replay.response == conflict


async def test_purge_deletes_only_expired_answers(store: Store) -> None:
    now = time.time()
    for key, expires_at in [("old", now - 1), ("edge", now), ("fresh", now + 60)]:
        await store.idempotency_begin(key, "fp", now - 100, LOCK)
        await store.idempotency_finish(
            IdempotentWrite(key=key, response=ACCEPTED, expires_at=expires_at)
        )
    await store.idempotency_begin("working", "fp", now, LOCK)

    assert await store.purge_expired(now) == 2
    assert await store.purge_expired(now) == 0
    assert await state(store, "fresh", "fp", now) == "done"
    assert await state(store, "working", "fp", now) == "pending"  # in-flight keys survive


async def test_finish_without_begin_still_stores_the_answer(store: Store) -> None:
    now = time.time()
    await store.idempotency_finish(IdempotentWrite(key="k", response=ACCEPTED, expires_at=now + 10))
    # With no request to compare against, the answer replays to any request with the key.
    replay = await store.idempotency_begin("k", "fp", now + 1, LOCK)
    assert replay.state == "done"
    assert replay.response == ACCEPTED
    assert await store.purge_expired(now + 9) == 0
    assert await store.purge_expired(now + 10) == 1


# owner tokens: a taken-over owner cannot commit -------------------------------------------------


async def begin_owner(store: Store, key: str, now: float, fingerprint: str = "fp") -> str:
    begun = await store.idempotency_begin(key, fingerprint, now, LOCK)
    assert begun.state == "owner"
    assert begun.owner
    return begun.owner


def owned(key: str, owner: str, now: float, body: bytes = ACCEPTED.body) -> IdempotentWrite:
    response = StoredResponse(status=202, body=body)
    return IdempotentWrite(key=key, response=response, expires_at=now + KEEP, owner=owner)


async def test_every_owner_gets_its_own_token(store: Store) -> None:
    now = time.time()
    first = await begin_owner(store, "k1", now)
    second = await begin_owner(store, "k2", now)
    taken_over = await begin_owner(store, "k1", now + LOCK)
    assert len({first, second, taken_over}) == 3
    waiting = await store.idempotency_begin("k1", "fp", now + LOCK + 1, LOCK)
    assert waiting.state == "pending"
    assert waiting.owner is None  # only the holder learns the token


async def test_taken_over_owner_cannot_commit_its_message(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    stalled = await begin_owner(store, "k", now)
    # A stalls past its lock; B's request takes the key over.
    successor = await begin_owner(store, "k", now + LOCK)
    late = make_message(app.id, created_at=now)

    with pytest.raises(errors.Conflict) as refused:
        await store.create_message(late, owned("k", stalled, now, b'{"id":"late"}'))

    assert "took it over" in str(refused.value.detail)
    assert await store.get_message(app.id, late.id) is None
    assert await store.list_deliveries(app.id, late.id, Page()) == []
    assert await store.claim_due(now + LOCK, ClaimPolicy(limit=10), LEASE) == []
    assert await state(store, "k", "fp", now + LOCK + 1) == "pending"  # B still holds the key

    mine = make_message(app.id, created_at=now + LOCK)
    assert await store.create_message(mine, owned("k", successor, now, b'{"id":"mine"}')) == 1
    replay = await store.idempotency_begin("k", "fp", now + LOCK + 2, LOCK)
    assert replay.state == "done"
    assert replay.response is not None and replay.response.body == b'{"id":"mine"}'
    assert [m.id for m in await store.list_messages(app.id, MessageFilter(), Page())] == [mine.id]
    claims = await store.claim_due(now + LOCK + 2, ClaimPolicy(limit=10), LEASE)
    assert [(c.message.id, c.endpoint.id) for c in claims] == [(mine.id, endpoint.id)]


async def test_owner_can_commit_after_its_lock_while_nobody_took_over(
    store: Store, app: Application
) -> None:
    # The lock only says when the key may be taken; until someone does, the owner still holds it.
    now = time.time()
    owner = await begin_owner(store, "k", now)
    message = make_message(app.id, created_at=now)
    await store.create_message(message, owned("k", owner, now))
    assert await store.get_message(app.id, message.id) == message
    assert await state(store, "k", "fp", now + LOCK + 1) == "done"


async def test_finishing_with_a_wrong_owner_fails_and_keeps_the_lock(store: Store) -> None:
    now = time.time()
    owner = await begin_owner(store, "k", now)
    with pytest.raises(errors.Conflict):
        await store.idempotency_finish(owned("k", "not-the-owner", now))
    assert await state(store, "k", "fp", now + 1) == "pending"
    await store.idempotency_finish(owned("k", owner, now))
    assert await state(store, "k", "fp", now + 2) == "done"


async def test_taken_over_owner_cannot_finish(store: Store) -> None:
    now = time.time()
    stalled = await begin_owner(store, "k", now)
    successor = await begin_owner(store, "k", now + LOCK)
    with pytest.raises(errors.Conflict):
        await store.idempotency_finish(owned("k", stalled, now, b'{"id":"late"}'))
    await store.idempotency_finish(owned("k", successor, now, b'{"id":"mine"}'))
    replay = await store.idempotency_begin("k", "fp", now + LOCK + 1, LOCK)
    assert replay.response is not None and replay.response.body == b'{"id":"mine"}'


async def test_an_owner_cannot_finish_twice(store: Store) -> None:
    now = time.time()
    owner = await begin_owner(store, "k", now)
    await store.idempotency_finish(owned("k", owner, now, b'{"id":"first"}'))
    with pytest.raises(errors.Conflict):
        await store.idempotency_finish(owned("k", owner, now, b'{"id":"second"}'))
    replay = await store.idempotency_begin("k", "fp", now + 1, LOCK)
    assert replay.response is not None and replay.response.body == b'{"id":"first"}'


async def test_owned_write_for_a_purged_lock_fails(store: Store, app: Application) -> None:
    now = time.time()
    owner = await begin_owner(store, "k", now)
    assert await store.purge_expired(now + LOCK) == 1
    message = make_message(app.id, created_at=now)
    with pytest.raises(errors.Conflict):
        await store.create_message(message, owned("k", owner, now))
    assert await store.get_message(app.id, message.id) is None


async def test_taken_over_owner_cannot_release_the_new_lock(store: Store) -> None:
    now = time.time()
    stalled = await begin_owner(store, "k", now)
    successor = await begin_owner(store, "k", now + LOCK)
    await store.idempotency_release("k", stalled)
    # Still B's: a third request must wait instead of running the request a second time.
    assert await state(store, "k", "fp", now + LOCK + 1) == "pending"
    await store.idempotency_release("k", successor)
    assert await state(store, "k", "fp", now + LOCK + 2) == "owner"


async def test_waiting_and_replays_do_not_write(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Repeats poll idempotency_begin while the owner works: they must not queue for the writer.
    now = time.time()
    owner = await begin_owner(store, "k", now)
    await store.idempotency_finish(owned("k2", await begin_owner(store, "k2", now), now))
    if isinstance(store, sqlite.SqliteStore):

        async def no_write(*args: object, **kwargs: object) -> None:
            raise AssertionError("a repeat must be answered without a write")

        monkeypatch.setattr(store, "_write", no_write)
    assert await state(store, "k", "fp", now + 1) == "pending"
    assert await state(store, "k", "fp-b", now + 1) == "mismatch"
    assert await state(store, "k2", "fp", now + 1) == "done"
    monkeypatch.undo()
    await store.idempotency_finish(owned("k", owner, now))
    assert await state(store, "k", "fp", now + 2) == "done"
