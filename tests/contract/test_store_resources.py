"""Orgs, tokens, applications, event types and endpoints: scoping, uniqueness, paging."""

from __future__ import annotations

import time

import pytest
from msgspec.structs import replace

from hookline import errors
from hookline.models import Application, ClaimPolicy, MessageStatus, Org, Page
from hookline.store.base import AttemptFilter, Store

from .conftest import (
    LEASE,
    add_endpoint,
    add_message,
    completion_for,
    make_app,
    make_endpoint,
    make_event_type,
)

# orgs and tokens -------------------------------------------------------------------------------


async def test_ensure_org_returns_the_same_org_for_the_same_name(store: Store) -> None:
    first = await store.ensure_org("acme", time.time())
    again = await store.ensure_org("acme", time.time() + 5)
    other = await store.ensure_org("globex", time.time())
    assert again == first
    assert first.id.startswith("org_")
    assert other.id != first.id
    assert other.name == "globex"


async def test_a_token_hash_is_stored_once(store: Store, org: Org) -> None:
    now = time.time()
    first = await store.create_token(org.id, "admin", "hash-dup", now)
    with pytest.raises(errors.Conflict):
        await store.create_token(org.id, "admin", "hash-dup", now)
    assert await store.find_token("hash-dup") == first
    assert await store.count_tokens() == 1


async def test_token_is_found_by_its_hash_only(store: Store, org: Org) -> None:
    now = time.time()
    token = await store.create_token(org.id, "ci", "hash-1", now)
    assert token.id.startswith("tok_")
    assert token.org_id == org.id
    assert await store.find_token("hash-1") == token
    assert await store.find_token("hash-2") is None


async def test_count_tokens_counts_every_org(store: Store, org: Org, other_org: Org) -> None:
    assert await store.count_tokens() == 0
    await store.create_token(org.id, "a", "h-a", time.time())
    await store.create_token(other_org.id, "b", "h-b", time.time())
    assert await store.count_tokens() == 2


async def test_ping_answers_on_an_open_store(store: Store) -> None:
    await store.ping()


# applications ----------------------------------------------------------------------------------


async def test_app_is_found_by_id_and_by_uid(store: Store, app: Application) -> None:
    assert await store.get_app(app.org_id, app.id) == app
    assert await store.get_app(app.org_id, "main-app") == app
    assert await store.get_app(app.org_id, "no-such-app") is None


async def test_another_orgs_app_is_invisible(
    store: Store, app: Application, other_org: Org
) -> None:
    assert await store.get_app(other_org.id, app.id) is None
    assert await store.get_app(other_org.id, "main-app") is None
    assert await store.list_apps(other_org.id, Page()) == []


async def test_app_uid_is_unique_within_an_org(store: Store, app: Application) -> None:
    with pytest.raises(errors.Conflict):
        await store.create_app(make_app(app.org_id, uid="main-app", name="impostor"))
    assert await store.get_app(app.org_id, "main-app") == app
    assert len(await store.list_apps(app.org_id, Page())) == 1


async def test_app_uid_may_repeat_across_orgs(
    store: Store, app: Application, other_org: Org
) -> None:
    theirs = make_app(other_org.id, uid="main-app")
    await store.create_app(theirs)
    assert await store.get_app(other_org.id, "main-app") == theirs
    assert await store.get_app(app.org_id, "main-app") == app


async def test_apps_without_uid_do_not_conflict(store: Store, org: Org) -> None:
    await store.create_app(make_app(org.id))
    await store.create_app(make_app(org.id))
    assert len(await store.list_apps(org.id, Page())) == 2


async def test_update_app_replaces_the_record(store: Store, app: Application) -> None:
    changed = replace(
        app, name="Renamed", uid="renamed", metadata={"k": "v"}, updated_at=app.updated_at + 1
    )
    await store.update_app(changed)
    assert await store.get_app(app.org_id, app.id) == changed
    assert await store.get_app(app.org_id, "renamed") == changed
    assert await store.get_app(app.org_id, "main-app") is None


async def test_update_app_keeping_its_own_uid_is_fine(store: Store, app: Application) -> None:
    await store.update_app(replace(app, name="Same uid"))
    found = await store.get_app(app.org_id, "main-app")
    assert found is not None
    assert found.name == "Same uid"


async def test_update_app_to_a_taken_uid_conflicts(
    store: Store, app: Application, other_app: Application
) -> None:
    with pytest.raises(errors.Conflict):
        await store.update_app(replace(other_app, uid="main-app"))
    assert await store.get_app(app.org_id, "main-app") == app
    assert await store.get_app(app.org_id, "other-app") == other_app


async def test_delete_app_reports_whether_it_existed(
    store: Store, app: Application, other_org: Org
) -> None:
    assert await store.delete_app(other_org.id, app.id) is False
    assert await store.get_app(app.org_id, app.id) == app
    assert await store.delete_app(app.org_id, app.id) is True
    assert await store.get_app(app.org_id, app.id) is None
    assert await store.delete_app(app.org_id, app.id) is False


async def test_delete_app_removes_everything_under_it(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    delivered = await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    await store.complete([completion_for(claim)], now)
    await add_message(store, app.id, created_at=now)  # still pending
    kept_endpoint = await add_endpoint(store, other_app.id)
    kept_message = await add_message(store, other_app.id, created_at=now)

    assert await store.delete_app(app.org_id, app.id) is True

    assert await store.get_endpoint(app.id, endpoint.id) is None
    assert await store.get_message(app.id, delivered.id) is None
    assert await store.list_attempts(app.id, AttemptFilter(), Page()) == []
    # The deleted app's pending task is gone: only the other app's message is handed out.
    claims = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    assert [(c.message.id, c.endpoint.id) for c in claims] == [(kept_message.id, kept_endpoint.id)]


async def test_list_apps_pages_by_id(store: Store, org: Org) -> None:
    created = [make_app(org.id, name=f"app {i}") for i in range(5)]
    for application in created:
        await store.create_app(application)
    ordered = sorted(a.id for a in created)

    async def listed(page: Page) -> list[str]:
        return [a.id for a in await store.list_apps(org.id, page)]

    assert await listed(Page()) == ordered
    assert await listed(Page(limit=2)) == ordered[:2]
    assert await listed(Page(limit=2, after=ordered[1])) == ordered[2:4]
    assert await listed(Page(after=ordered[-1])) == []
    assert await listed(Page(descending=True)) == ordered[::-1]
    assert await listed(Page(descending=True, limit=2)) == ordered[::-1][:2]
    assert await listed(Page(descending=True, after=ordered[2])) == ordered[:2][::-1]


# event types -----------------------------------------------------------------------------------


async def test_event_type_is_found_by_name_within_its_org(
    store: Store, org: Org, other_org: Org
) -> None:
    event_type = make_event_type(org.id, "invoice.paid")
    await store.create_event_type(event_type)
    assert await store.get_event_type(org.id, "invoice.paid") == event_type
    assert await store.get_event_type(other_org.id, "invoice.paid") is None


async def test_event_type_name_conflicts_even_when_archived(store: Store, org: Org) -> None:
    await store.create_event_type(make_event_type(org.id, "invoice.paid"))
    await store.create_event_type(make_event_type(org.id, "invoice.void", archived=True))
    with pytest.raises(errors.Conflict):
        await store.create_event_type(make_event_type(org.id, "invoice.paid"))
    with pytest.raises(errors.Conflict):
        await store.create_event_type(make_event_type(org.id, "invoice.void"))


async def test_same_event_type_name_in_two_orgs(store: Store, org: Org, other_org: Org) -> None:
    await store.create_event_type(make_event_type(org.id, "invoice.paid"))
    await store.create_event_type(make_event_type(other_org.id, "invoice.paid"))
    assert [t.name for t in await store.list_event_types(other_org.id, Page(), False)] == [
        "invoice.paid"
    ]


async def test_archived_event_types_are_listed_only_on_request(store: Store, org: Org) -> None:
    await store.create_event_type(make_event_type(org.id, "a.live"))
    await store.create_event_type(make_event_type(org.id, "b.gone", archived=True))
    visible = await store.list_event_types(org.id, Page(), include_archived=False)
    everything = await store.list_event_types(org.id, Page(), include_archived=True)
    assert [t.name for t in visible] == ["a.live"]
    assert [t.name for t in everything] == ["a.live", "b.gone"]
    # Archived types can still be fetched by name.
    gone = await store.get_event_type(org.id, "b.gone")
    assert gone is not None
    assert gone.archived


async def test_update_event_type_replaces_it(store: Store, org: Org) -> None:
    event_type = make_event_type(org.id, "invoice.paid")
    await store.create_event_type(event_type)
    archived = replace(
        event_type, description="No longer sent", archived=True, schemas={"1": {"type": "object"}}
    )
    await store.update_event_type(archived)
    assert await store.get_event_type(org.id, "invoice.paid") == archived
    assert await store.list_event_types(org.id, Page(), include_archived=False) == []


async def test_list_event_types_pages_by_name(store: Store, org: Org) -> None:
    names = ["d.four", "a.one", "c.three", "b.two", "e.five"]
    for name in names:
        await store.create_event_type(make_event_type(org.id, name))
    ordered = sorted(names)

    async def listed(page: Page) -> list[str]:
        return [t.name for t in await store.list_event_types(org.id, page, True)]

    assert await listed(Page()) == ordered
    assert await listed(Page(limit=2, after="b.two")) == ["c.three", "d.four"]
    assert await listed(Page(descending=True, limit=3)) == ["e.five", "d.four", "c.three"]
    assert await listed(Page(descending=True, after="c.three")) == ["b.two", "a.one"]


# endpoints -------------------------------------------------------------------------------------


async def test_endpoint_is_found_by_id_and_uid_within_its_app(
    store: Store, app: Application, other_app: Application
) -> None:
    endpoint = await add_endpoint(store, app.id, uid="primary")
    assert await store.get_endpoint(app.id, endpoint.id) == endpoint
    assert await store.get_endpoint(app.id, "primary") == endpoint
    assert await store.get_endpoint(other_app.id, endpoint.id) is None
    assert await store.get_endpoint(other_app.id, "primary") is None


async def test_endpoint_uid_is_unique_within_an_app(
    store: Store, app: Application, other_app: Application
) -> None:
    first = await add_endpoint(store, app.id, uid="primary")
    with pytest.raises(errors.Conflict):
        await store.create_endpoint(make_endpoint(app.id, uid="primary"))
    assert await store.list_endpoints(app.id, Page()) == [first]
    # Another app may use the same uid, and endpoints without uid never clash.
    await add_endpoint(store, other_app.id, uid="primary")
    await add_endpoint(store, app.id)
    await add_endpoint(store, app.id)
    assert len(await store.list_endpoints(app.id, Page())) == 3


async def test_update_endpoint_replaces_it_and_guards_uid(store: Store, app: Application) -> None:
    primary = await add_endpoint(store, app.id, uid="primary")
    backup = await add_endpoint(store, app.id, uid="backup")
    changed = replace(
        primary, url="https://new.example.com/in", event_types=("invoice.paid",), disabled=True
    )
    await store.update_endpoint(changed)
    assert await store.get_endpoint(app.id, "primary") == changed
    with pytest.raises(errors.Conflict):
        await store.update_endpoint(replace(backup, uid="primary"))
    assert await store.get_endpoint(app.id, "backup") == backup


async def test_list_endpoints_pages_by_id(store: Store, app: Application) -> None:
    ordered = sorted([(await add_endpoint(store, app.id)).id for _ in range(4)])
    listed = await store.list_endpoints(app.id, Page(limit=2, after=ordered[0]))
    assert [e.id for e in listed] == ordered[1:3]
    listed = await store.list_endpoints(app.id, Page(descending=True, after=ordered[3]))
    assert [e.id for e in listed] == ordered[:3][::-1]


async def test_delete_endpoint_drops_its_tasks_but_keeps_attempts(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    first = await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    await store.complete([completion_for(claim)], now)
    await add_message(store, app.id, created_at=now)  # queued, never sent

    assert await store.delete_endpoint(other_app.id, endpoint.id) is False
    assert await store.delete_endpoint(app.id, endpoint.id) is True
    assert await store.delete_endpoint(app.id, endpoint.id) is False

    assert await store.get_endpoint(app.id, endpoint.id) is None
    assert await store.claim_due(now + 60, ClaimPolicy(limit=10), LEASE) == []
    assert await store.next_due_at() is None
    assert await store.list_deliveries(app.id, first.id, Page()) == []
    attempts = await store.list_attempts(app.id, AttemptFilter(msg_id=first.id), Page())
    assert [a.endpoint_id for a in attempts] == [endpoint.id]


async def test_endpoint_stats_count_tasks_by_status(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    other = await add_endpoint(store, app.id)
    for _ in range(4):
        await add_message(store, app.id, created_at=now)
    claims = [
        c
        for c in await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
        if c.endpoint.id == endpoint.id
    ]
    ok, failed, retrying, _sending = claims
    await store.complete(
        [
            completion_for(ok),
            completion_for(failed, next_status=MessageStatus.FAIL, code=500),
            completion_for(
                retrying, next_status=MessageStatus.PENDING, code=503, next_attempt_at=now + 5
            ),
        ],
        now,
    )
    stats = await store.endpoint_stats(app.id, endpoint.id, None, None)
    assert (stats.success, stats.fail, stats.pending, stats.sending, stats.canceled) == (
        1,
        1,
        1,
        1,
        0,
    )
    # The untouched endpoint has its own four tasks, all still sending.
    other_stats = await store.endpoint_stats(app.id, other.id, None, None)
    assert other_stats.sending == 4
    assert other_stats.success == 0


async def test_endpoint_stats_respect_the_message_window(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    for created_at in (now - 300, now - 200, now - 100):
        await add_message(store, app.id, created_at=created_at)

    async def pending(since: float | None, until: float | None) -> int:
        return (await store.endpoint_stats(app.id, endpoint.id, since, until)).pending

    assert await pending(None, None) == 3
    assert await pending(now - 200, None) == 2  # since is inclusive
    assert await pending(None, now - 200) == 1  # until is exclusive
    assert await pending(now - 250, now - 100) == 1
    assert await pending(now, None) == 0
