"""Idempotency keys: who owns a key, who waits, who gets the replay, and when keys expire."""

from __future__ import annotations

import time

from hookline.models import StoredResponse
from hookline.store.base import IdempotentWrite, Store

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
