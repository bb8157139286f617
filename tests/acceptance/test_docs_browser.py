"""``/docs`` as a reader sees it: a real ``hookline serve`` and Debian's chromium, headless.

Chromium loads the page, runs the vendored Swagger UI against ``/api/v1/openapi.json`` (an
OpenAPI 3.1 document, which Swagger UI 4 refused with "Unable to render this definition") and
prints the DOM it ended with (``--dump-dom``). The test then reads the operations off that DOM
and compares them with the document. ``make test`` installs chromium (``scripts/test-deps``);
without it the test fails under CI and skips elsewhere. No tool downloads a browser of its own.
"""

from __future__ import annotations

import contextlib
import html.parser
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hookline.api import openapi
from tests.support.server import HooklineServer

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; see scripts/test-deps
# Virtual time lets the page's scripts and its fetch of the document finish before the dump;
# the wall-clock bound covers a chromium that hangs anyway.
VIRTUAL_TIME_BUDGET_MS = 10_000
CHROMIUM_TIMEOUT_SECONDS = 60.0
# Root in a container needs --no-sandbox; the rest keep chromium off the (closed) network and
# away from first-run work; a fresh --user-data-dir is added per run.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
ERROR_TEXTS = ("Unable to render", "Failed to load API definition", "Could not render")


def _require_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    message = f"{CHROMIUM} is missing: run scripts/test-deps (as root) or apt-get install chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _dump_dom(url: str) -> str:
    """The DOM of ``url`` after its scripts ran, from a headless chromium on a fresh profile.

    The profile directory is removed afterwards; on timeout the whole chromium process group
    (the launcher script, the browser and its helpers) is killed before the test fails.
    """
    with tempfile.TemporaryDirectory(prefix="hookline-chromium-") as profile:
        proc = subprocess.Popen(
            [
                str(CHROMIUM),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
                "--dump-dom",
                url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout can kill every helper
        )
        try:
            out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(
                f"chromium did not finish within {CHROMIUM_TIMEOUT_SECONDS:g} s\n"
                f"{err.decode('utf-8', 'replace')[-3000:]}"
            )
        finally:
            # Helpers that outlived the browser would hold the profile directory open.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0, (
            f"chromium exited with status {proc.returncode}\n"
            f"{err.decode('utf-8', 'replace')[-3000:]}"
        )
        return out.decode("utf-8")


class _Operations(html.parser.HTMLParser):
    """Collect (method, path, summary) from Swagger UI's operation headers (``opblock-summary``).

    Each operation's header holds a method span, a path span carrying ``data-path`` and a
    description div with the summary, in that order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[tuple[str, str, str]] = []
        self._method = ""
        self._path = ""
        self._capture: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if "opblock-summary-method" in classes:
            self._capture, self._text = "method", []
        elif "opblock-summary-path" in classes:
            self._path = attributes.get("data-path") or ""
        elif "opblock-summary-description" in classes:
            self._capture, self._text = "summary", []

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._capture is None or tag not in ("span", "div"):
            return
        text = "".join(self._text).strip()
        if self._capture == "method":
            self._method = text
        else:
            self.operations.append((self._method, self._path, text))
        self._capture = None


def _documented_operations() -> list[tuple[str, str, str]]:
    return sorted(
        (method.upper(), path, op["summary"])
        for path, methods in openapi.document()["paths"].items()
        for method, op in methods.items()
    )


def test_docs_page_renders_every_operation_of_the_openapi_document_in_chromium(
    start_server: Callable[..., HooklineServer],
) -> None:
    _require_chromium()
    server = start_server()
    page = httpx.get(f"{server.base_url}/docs", timeout=5.0).text
    assert "https://" not in page and "http://" not in page  # every asset comes from this host

    dom = _dump_dom(f"{server.base_url}/docs")

    for text in ERROR_TEXTS:
        assert text not in dom, f"Swagger UI reported {text!r}:\n{dom[:3000]}"
    assert "OAS 3.1" in dom  # Swagger UI's badge: it read the document as OpenAPI 3.1
    assert "validator.swagger.io" not in dom  # no badge fetched from off this host
    parser = _Operations()
    parser.feed(dom)
    rendered = sorted(parser.operations)
    assert rendered, f"no operations on the rendered page:\n{dom[:3000]}"
    paths = {path for _, path, _ in rendered}
    assert {"/api/v1/app", "/api/v1/app/{app_id}/msg", "/api/v1/app/{app_id}/endpoint"} <= paths
    assert rendered == _documented_operations()
