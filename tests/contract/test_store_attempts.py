"""The attempt log: filters, paging and scoping as the attempts API exposes them."""

from __future__ import annotations

import time

import msgspec

from hookline.models import Application, Attempt, ClaimPolicy, MessageStatus, Page
from hookline.store.base import AttemptFilter, Store

from .conftest import LEASE, add_endpoint, add_message, completion_for

OK = MessageStatus.SUCCESS
RETRY = MessageStatus.PENDING
FAIL = MessageStatus.FAIL


class Log(msgspec.Struct, frozen=True, kw_only=True):
    """Six attempts: two messages to two endpoints, over two rounds ten seconds apart."""

    app: Application
    m1: str
    m2: str
    e1: str
    e2: str
    t: float
    attempts: list[Attempt]

    def ids(self, *codes: int) -> set[str]:
        return {a.id for a in self.attempts if a.response_status_code in codes}


async def build_log(store: Store, app: Application) -> Log:
    t = time.time()
    e1 = await add_endpoint(store, app.id)
    e2 = await add_endpoint(store, app.id)
    m1 = await add_message(store, app.id, created_at=t)
    m2 = await add_message(store, app.id, created_at=t)
    attempts: list[Attempt] = []

    async def round_(
        now: float, outcomes: dict[tuple[str, str], tuple[MessageStatus, int]]
    ) -> None:
        claims = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
        assert {(c.message.id, c.endpoint.id) for c in claims} == set(outcomes)
        completions = []
        for claim in claims:
            status, code = outcomes[(claim.message.id, claim.endpoint.id)]
            completions.append(
                completion_for(
                    claim,
                    next_status=status,
                    code=code,
                    next_attempt_at=t + 10 if status == RETRY else None,
                    created_at=now,
                )
            )
        await store.complete(completions, now)
        attempts.extend(c.attempt for c in completions)

    await round_(
        t,
        {
            (m1.id, e1.id): (OK, 200),
            (m1.id, e2.id): (RETRY, 0),  # connection refused: no HTTP status at all
            (m2.id, e1.id): (RETRY, 503),
            (m2.id, e2.id): (FAIL, 404),
        },
    )
    await round_(t + 10, {(m1.id, e2.id): (OK, 201), (m2.id, e1.id): (FAIL, 500)})
    return Log(app=app, m1=m1.id, m2=m2.id, e1=e1.id, e2=e2.id, t=t, attempts=attempts)


async def listed(store: Store, log: Log, flt: AttemptFilter, page: Page | None = None) -> set[str]:
    return {a.id for a in await store.list_attempts(log.app.id, flt, page or Page())}


async def test_attempts_filter_by_message_and_endpoint(store: Store, app: Application) -> None:
    log = await build_log(store, app)
    assert await listed(store, log, AttemptFilter()) == log.ids(200, 0, 503, 404, 201, 500)
    assert await listed(store, log, AttemptFilter(msg_id=log.m1)) == log.ids(200, 0, 201)
    assert await listed(store, log, AttemptFilter(endpoint_id=log.e1)) == log.ids(200, 503, 500)
    assert await listed(store, log, AttemptFilter(msg_id=log.m2, endpoint_id=log.e2)) == log.ids(
        404
    )


async def test_attempts_filter_by_status(store: Store, app: Application) -> None:
    log = await build_log(store, app)
    assert await listed(store, log, AttemptFilter(status=OK)) == log.ids(200, 201)
    assert await listed(store, log, AttemptFilter(status=FAIL)) == log.ids(0, 503, 404, 500)
    assert await listed(store, log, AttemptFilter(status=MessageStatus.SENDING)) == set()


async def test_attempts_filter_by_status_code_class(store: Store, app: Application) -> None:
    log = await build_log(store, app)

    async def of_class(code_class: int) -> set[str]:
        return await listed(store, log, AttemptFilter(status_code_class=code_class))

    assert await of_class(0) == log.ids(0)
    assert await of_class(200) == log.ids(200, 201)
    assert await of_class(400) == log.ids(404)
    assert await of_class(500) == log.ids(503, 500)
    assert await of_class(300) == set()


async def test_attempts_filter_by_time(store: Store, app: Application) -> None:
    log = await build_log(store, app)
    first_round = log.ids(200, 0, 503, 404)
    second_round = log.ids(201, 500)
    assert await listed(store, log, AttemptFilter(before=log.t + 10)) == first_round
    assert await listed(store, log, AttemptFilter(after=log.t)) == second_round
    assert await listed(store, log, AttemptFilter(after=log.t, before=log.t + 10)) == set()
    assert await listed(store, log, AttemptFilter(after=log.t - 1, status=FAIL)) == log.ids(
        0, 503, 404, 500
    )


async def test_attempts_page_by_id(store: Store, app: Application) -> None:
    log = await build_log(store, app)
    ordered = sorted(a.id for a in log.attempts)

    async def page(p: Page) -> list[str]:
        return [a.id for a in await store.list_attempts(app.id, AttemptFilter(), p)]

    assert await page(Page(limit=4)) == ordered[:4]
    assert await page(Page(limit=4, after=ordered[3])) == ordered[4:]
    assert await page(Page(descending=True, limit=2)) == ordered[::-1][:2]
    assert await page(Page(descending=True, after=ordered[2])) == ordered[:2][::-1]


async def test_attempts_are_scoped_to_their_app_and_message(
    store: Store, app: Application, other_app: Application
) -> None:
    log = await build_log(store, app)
    attempt = log.attempts[0]
    assert await store.get_attempt(app.id, attempt.msg_id, attempt.id) == attempt
    other_msg = log.m2 if attempt.msg_id == log.m1 else log.m1
    assert await store.get_attempt(app.id, other_msg, attempt.id) is None
    assert await store.get_attempt(other_app.id, attempt.msg_id, attempt.id) is None
    assert await store.get_attempt(app.id, attempt.msg_id, "atmpt_missing") is None
    assert await store.list_attempts(other_app.id, AttemptFilter(), Page()) == []


async def test_attempt_records_round_trip(store: Store, app: Application) -> None:
    log = await build_log(store, app)
    stored = await store.list_attempts(app.id, AttemptFilter(), Page())
    assert sorted(stored, key=lambda a: a.id) == sorted(log.attempts, key=lambda a: a.id)
