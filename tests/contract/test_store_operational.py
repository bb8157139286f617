"""``find_app``: the application by id alone, for the operational webhooks (no org at hand)."""

from __future__ import annotations

from hookline.models import Application, Org
from hookline.store.base import Store

from .conftest import make_app


async def test_find_app_finds_an_app_by_id_in_any_org(
    store: Store, app: Application, other_org: Org
) -> None:
    elsewhere = make_app(other_org.id, uid="main-app")  # the same uid in another org
    await store.create_app(elsewhere)
    assert await store.find_app(app.id) == app
    assert await store.find_app(elsewhere.id) == elsewhere


async def test_find_app_does_not_resolve_uids_or_unknown_ids(
    store: Store, app: Application
) -> None:
    assert await store.find_app("main-app") is None
    assert await store.find_app("app_01JD000000000000000000000") is None


async def test_find_app_forgets_a_deleted_app(store: Store, app: Application) -> None:
    assert await store.delete_app(app.org_id, app.id)
    assert await store.find_app(app.id) is None
