"""A real HTTP receiver for webhook deliveries, scripted per path.

It runs an aiohttp server on 127.0.0.1 (an OS-chosen port) in a background thread with its own
event loop, so synchronous tests (the svix SDK is synchronous) can drive hookline and then wait
for what arrives. Every request is recorded; each path answers from its script::

    with Receiver() as rx:
        path = rx.new_path("flaky")
        rx.script(path, 500, 500, then=200)          # fail twice, then succeed
        rx.redirect(rx.new_path("moved"), to=path)   # 302 with a Location to another path
        rx.script(rx.new_path("slow"), then=Reply(200, delay=1.0))
        ...
        first, second, third = rx.wait_for(path, 3, timeout=10)
        rx.inflight(path)                            # handlers of path still running (a delay)

Paths without a script answer 200. Tests share one hookline server, so each test uses fresh
paths (``new_path``) and never mistakes another test's late retry for its own delivery.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
# In-flight handlers (a scripted delay) get this long to finish when the receiver stops.
SHUTDOWN_GRACE_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer; ``delay`` (seconds) is slept before answering."""

    status: int = 200
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the receiver saw it; ``at`` is ``time.monotonic()`` on arrival."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float
    status: int  # what the receiver answered
    peer_port: int = 0  # the sender's source port: which process (connection) sent it


@dataclass(slots=True)
class _Script:
    queue: collections.deque[Reply]
    then: Reply


def _reply(value: Reply | int) -> Reply:
    return value if isinstance(value, Reply) else Reply(status=value)


class Receiver:
    """The scripted receiver; use it as a context manager (or call ``start``/``stop``)."""

    def __init__(self) -> None:
        self.port = 0
        self._cond = threading.Condition()
        self._requests: list[Recorded] = []
        self._scripts: dict[str, _Script] = {}
        self._running: collections.Counter[str] = collections.Counter()  # path -> handlers
        self._finished: list[tuple[str, float, int]] = []  # (path, monotonic end, peer port)
        self._running_peers: collections.Counter[int] = collections.Counter()  # port -> handlers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._startup_error: BaseException | None = None

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Receiver:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="webhook-receiver", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_TIMEOUT_SECONDS):
            raise RuntimeError(f"receiver did not start within {START_TIMEOUT_SECONDS:g} s")
        if self._startup_error is not None:
            raise RuntimeError("receiver failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT_SECONDS)
        self._thread = None
        if thread.is_alive():
            raise RuntimeError(f"receiver did not stop within {STOP_TIMEOUT_SECONDS:g} s")

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS
        )
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, HOST, 0)
            loop.run_until_complete(site.start())
            self.port = runner.addresses[0][1]
        except BaseException as exc:
            self._startup_error = exc
            loop.run_until_complete(runner.cleanup())
            loop.close()
            self._loop = None  # nothing to stop
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            # Handlers whose client has gone are not the runner's any more (a crashed or
            # stopped sender's requests, still in their scripted delay): end them here, or
            # closing the loop destroys them pending.
            leftover = asyncio.all_tasks(loop)
            if leftover:
                for task in leftover:
                    task.cancel()
                loop.run_until_complete(asyncio.wait(leftover))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # scripting ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this receiver."""
        return self.base_url + path

    def new_path(self, label: str = "hook") -> str:
        """A path no other test uses, e.g. ``/flaky-1f0c9a2b7e``."""
        return f"/{label}-{uuid.uuid4().hex[:10]}"

    def script(self, path: str, *replies: Reply | int, then: Reply | int = 200) -> None:
        """Answer ``path`` with ``replies`` in order, then ``then`` for every later request.

        Replaces any earlier script of the path (e.g. to let a failing endpoint recover).
        """
        with self._cond:
            self._scripts[path] = _Script(
                queue=collections.deque(_reply(r) for r in replies), then=_reply(then)
            )

    def redirect(self, path: str, *, to: str, status: int = 302) -> None:
        """Answer ``path`` with a redirect whose Location is the path ``to`` on this receiver."""
        self.script(path, then=Reply(status=status, headers={"Location": self.url(to)}))

    # what arrived ------------------------------------------------------------------------------
    def requests(self, path: str | None = None) -> list[Recorded]:
        """Requests received so far (to ``path`` only, when given), in arrival order."""
        with self._cond:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 10.0) -> list[Recorded]:
        """Wait until ``path`` received at least ``count`` requests; return all of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self._requests if r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver: expected {count} request(s) to {path} within {timeout:g} s, "
                        f"got {len(got)}; all paths so far: {self._summary()}"
                    )
                self._cond.wait(left)

    def assert_no_more(self, path: str, count: int, seconds: float) -> None:
        """Assert that ``path`` has exactly ``count`` requests and none more arrive for a while.

        Returns after ``seconds`` of quiet; fails as soon as an extra request arrives.
        """
        deadline = time.monotonic() + seconds
        with self._cond:
            while True:
                got = sum(1 for r in self._requests if r.path == path)
                if got != count:
                    raise AssertionError(
                        f"receiver: expected exactly {count} request(s) to {path}, got {got}; "
                        f"all paths so far: {self._summary()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def inflight(self, path: str | None = None) -> int:
        """Requests (to ``path`` only, when given) whose handler is still running.

        A handler runs from arrival until its scripted delay is over, even when the client has
        gone meanwhile (aiohttp does not cancel handlers on disconnect): a crashed sender's
        requests stay in flight here until their delay ends.
        """
        with self._cond:
            return self._running[path] if path is not None else sum(self._running.values())

    def finished_since(self, at: float, path: str | None = None) -> int:
        """Requests (to ``path`` only, when given) whose handler ended at or after ``at``.

        ``at`` is a ``time.monotonic()`` reading; a handler ends when it returns its answer
        (or is cancelled), which is not proof that the client read the answer.
        """
        with self._cond:
            return sum(
                1 for p, end, _ in self._finished if end >= at and (path is None or p == path)
            )

    def inflight_from(self, ports: set[int]) -> int:
        """Requests still in their handler that came from one of these source ports."""
        with self._cond:
            return sum(n for port, n in self._running_peers.items() if port in ports)

    def finished_from_since(self, ports: set[int], at: float) -> int:
        """Requests from these source ports whose handler ended at or after ``at``."""
        with self._cond:
            return sum(1 for _, end, port in self._finished if end >= at and port in ports)

    def _summary(self) -> dict[str, int]:
        return dict(collections.Counter(r.path for r in self._requests))

    # the server side ---------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.monotonic()
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer_port = int(peername[1]) if peername else 0
        with self._cond:
            script = self._scripts.get(request.path)
            if script is None:
                reply = Reply()
            elif script.queue:
                reply = script.queue.popleft()
            else:
                reply = script.then
            self._requests.append(
                Recorded(
                    method=request.method,
                    path=request.path,
                    query=request.query_string,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    at=at,
                    status=reply.status,
                    peer_port=peer_port,
                )
            )
            self._running[request.path] += 1
            self._running_peers[peer_port] += 1
            self._cond.notify_all()
        try:
            if reply.delay > 0:
                await asyncio.sleep(reply.delay)
            return web.Response(status=reply.status, text=reply.body, headers=dict(reply.headers))
        finally:
            with self._cond:
                self._running[request.path] -= 1
                self._running_peers[peer_port] -= 1
                self._finished.append((request.path, time.monotonic(), peer_port))
                self._cond.notify_all()
