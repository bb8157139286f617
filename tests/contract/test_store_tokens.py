"""Tokens as ``hookline token list`` / ``revoke`` and the API's last-use tracking see them."""

from __future__ import annotations

import time

from hookline.models import Org
from hookline.store.base import Store


async def test_list_tokens_shows_every_org_oldest_first_and_no_hash(
    store: Store, org: Org, other_org: Org
) -> None:
    now = time.time()
    first = await store.create_token(org.id, "ci", "hash-ci", now)
    second = await store.create_token(other_org.id, "deploy", "hash-deploy", now + 1)

    listed = await store.list_tokens()

    assert [(t.id, t.name, t.org_id, t.org_name) for t in listed] == [
        (first.id, "ci", org.id, "acme"),
        (second.id, "deploy", other_org.id, "globex"),
    ]
    assert [t.created_at for t in listed] == [now, now + 1]
    assert [t.last_used_at for t in listed] == [None, None]  # never used yet
    assert "hash-ci" not in repr(listed)


async def test_list_tokens_of_an_empty_store_is_empty(store: Store) -> None:
    assert await store.list_tokens() == []


async def test_a_revoked_token_is_no_longer_found(store: Store, org: Org) -> None:
    kept = await store.create_token(org.id, "kept", "hash-kept", time.time())
    gone = await store.create_token(org.id, "gone", "hash-gone", time.time())

    assert await store.revoke_token(gone.id) is True

    assert await store.find_token("hash-gone") is None
    assert await store.find_token("hash-kept") == kept
    assert [t.id for t in await store.list_tokens()] == [kept.id]
    assert await store.count_tokens() == 1
    assert await store.revoke_token(gone.id) is False  # twice: nothing left to revoke
    assert await store.revoke_token("tok_unknown") is False


async def test_a_revoked_secret_can_be_stored_again_as_a_new_token(store: Store, org: Org) -> None:
    old = await store.create_token(org.id, "admin", "hash-admin", time.time())
    await store.revoke_token(old.id)
    again = await store.create_token(org.id, "admin", "hash-admin", time.time())
    assert again.id != old.id
    assert await store.find_token("hash-admin") == again


async def test_touch_records_last_use_and_never_moves_it_back(store: Store, org: Org) -> None:
    now = time.time()
    used = await store.create_token(org.id, "used", "hash-used", now)
    idle = await store.create_token(org.id, "idle", "hash-idle", now)

    await store.touch_tokens({used.id: now + 60})
    await store.touch_tokens({used.id: now + 30})  # an older time from a slower process

    last_used = {t.id: t.last_used_at for t in await store.list_tokens()}
    assert last_used == {used.id: now + 60, idle.id: None}


async def test_touch_batches_several_tokens_and_ignores_revoked_ones(
    store: Store, org: Org, other_org: Org
) -> None:
    now = time.time()
    a = await store.create_token(org.id, "a", "hash-a", now)
    b = await store.create_token(other_org.id, "b", "hash-b", now)
    gone = await store.create_token(org.id, "gone", "hash-gone", now)
    await store.revoke_token(gone.id)

    await store.touch_tokens({a.id: now + 1, b.id: now + 2, gone.id: now + 3})
    await store.touch_tokens({})

    last_used = {t.id: t.last_used_at for t in await store.list_tokens()}
    assert last_used == {a.id: now + 1, b.id: now + 2}
    # the token itself is unchanged by being used
    assert await store.find_token("hash-a") == a
