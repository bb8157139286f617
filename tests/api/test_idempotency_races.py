"""Idempotency under races: one key never makes two messages, even past an owner's lock."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from hookline.api import idempotency
from hookline.app import Hookline
from hookline.models import Message
from hookline.store.base import IdempotentWrite

from .conftest import assert_error, create_app, list_all

LOCK_SECONDS = 0.3  # shortened so a stalled owner can be taken over within the test
WAIT_LIMIT_SECONDS = 0.1  # shorter than the lock, as in production
BODY = {"eventType": "order.placed", "payload": {"order": 42}}


async def test_concurrent_requests_with_one_key_make_one_message(
    client: httpx.AsyncClient,
) -> None:
    app = await create_app(client)
    url = f"/api/v1/app/{app['id']}/msg"
    headers = {"idempotency-key": "race-1"}

    answers = await asyncio.gather(
        *(client.post(url, json=BODY, headers=headers) for _ in range(2))
    )

    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    assert answers[0].json() == answers[1].json()
    messages = await list_all(client, url)
    assert [m["id"] for m in messages] == [answers[0].json()["id"]]


async def test_stalled_owner_past_its_lock_commits_nothing_and_answers_like_the_new_owner(
    client: httpx.AsyncClient, hl: Hookline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "LOCK_SECONDS", LOCK_SECONDS)
    monkeypatch.setattr(idempotency, "WAIT_LIMIT_SECONDS", WAIT_LIMIT_SECONDS)
    app = await create_app(client)
    url = f"/api/v1/app/{app['id']}/msg"
    headers = {"idempotency-key": "stall-1"}

    stalled = asyncio.Event()
    resume = asyncio.Event()
    create_message = hl.store.create_message

    async def first_one_stalls(message: Message, write: IdempotentWrite | None = None) -> Any:
        if not stalled.is_set():
            stalled.set()
            await resume.wait()  # e.g. a long GC pause or a stuck disk, past the lock
        return await create_message(message, write)

    monkeypatch.setattr(hl.store, "create_message", first_one_stalls)

    first = asyncio.create_task(client.post(url, json=BODY, headers=headers))
    await asyncio.wait_for(stalled.wait(), 5)
    # While the owner holds the lock a repeat waits, then gives up without taking the key.
    waiting = await client.post(url, json=BODY, headers=headers)
    assert_error(waiting, 409, "conflict")
    assert "in progress" in waiting.json()["detail"]

    await asyncio.sleep(LOCK_SECONDS)
    second = await client.post(url, json=BODY, headers=headers)  # takes the key over
    assert second.status_code == 202, second.text

    resume.set()
    late = await asyncio.wait_for(first, 5)
    # the store refused the stalled owner's commit; it answers what the key's new owner did
    assert late.status_code == 202, late.text
    assert late.json() == second.json()

    messages = await list_all(client, url)
    assert [m["id"] for m in messages] == [second.json()["id"]]
    replay = await client.post(url, json=BODY, headers=headers)
    assert replay.status_code == 202
    assert replay.json() == second.json()


async def test_reused_key_with_another_body_is_a_409_mismatch(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    url = f"/api/v1/app/{app['id']}/msg"
    headers = {"idempotency-key": "reuse-1"}
    assert (await client.post(url, json=BODY, headers=headers)).status_code == 202

    other = {"eventType": "order.placed", "payload": {"order": 43}}
    resp = await client.post(url, json=other, headers=headers)

    body = assert_error(resp, 409, "idempotency_key_mismatch")
    assert isinstance(body["detail"], str)
    assert len(await list_all(client, url)) == 1
