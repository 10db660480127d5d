"""The service's pages in a real browser, with no network: headless Chromium (Debian's, installed by
``make install-browser``), driven by Playwright, against a live server on 127.0.0.1.

Every request that is not to the server is refused and recorded, and each test checks that there was
none: ``/docs``, ``/redoc`` and ``/explore`` must render from the service alone. The explorer's test
uses a column of 10,000 categories. Screenshots go to the test's temporary directory (printed with
``-s``; ``pytest --basetemp DIR`` keeps them in DIR).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _servables import build_clustered_servable
from test_service_support import API_KEY, LiveServer, live_server

pytestmark = pytest.mark.browser

INSTALL_HINT = (
    "run `make install-browser` (as root it installs Debian's chromium package with apt-get), or set "
    "CHROMIUM to a Chromium or Chrome binary"
)
N_ITEMS = 10_000


def chromium() -> str:
    """The browser binary; the test fails (not skips) without one, saying how to install it."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail(f"no Chromium found for the browser tests: {INSTALL_HINT}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("browser")
    servable = build_clustered_servable(root, n_items=N_ITEMS)
    with live_server(str(servable), root / "server.log", extra_env={"EMBEDKIT_API_KEY": API_KEY}) as s:
        s.wait_ready(headers={"X-API-Key": API_KEY})
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -e '.[dev]'", pytrace=False)
    with sync_playwright() as pw:
        # no DNS for anything but the server: a request that slipped past the route below still fails
        args = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--disable-dev-shm-usage"]
        b = pw.chromium.launch(executable_path=path, args=args)
        yield b
        b.close()


class Visit:
    """A browser page whose requests may go to the server only; it records what it refused and the
    page's errors."""

    def __init__(self, browser: Any, server: LiveServer, headers: dict[str, str] | None = None) -> None:
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 800}, extra_http_headers=headers
        )
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.server = server

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.server.url + "/"):
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()

    def until(self, script: str, timeout: float = 15.0) -> Any:
        """Poll ``script`` (a JS expression) until it is truthy; ``page.wait_for_function`` cannot run
        under the pages' Content-Security-Policy (it evaluates strings in the page)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.page.evaluate(f"() => {script}")
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {script!r}; page errors: {self.errors}")
            time.sleep(0.05)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser: Any, server: LiveServer) -> Iterator[Any]:
    visits: list[Visit] = []

    def make(headers: dict[str, str] | None = None) -> Visit:
        visits.append(Visit(browser, server, headers))
        return visits[-1]

    yield make
    for v in visits:
        v.close()


def neighbours_json(server: LiveServer, column: str, value: str, k: int = 10) -> list[tuple[str, str]]:
    r = httpx.get(
        f"{server.url}/embeddings/{column}/{value}/neighbors",
        params={"k": k},
        headers={"X-API-Key": API_KEY},
    )
    assert r.status_code == 200, r.text
    return [(str(n["category"]), f"{n['similarity']:.3f}") for n in r.json()["neighbors"]]


def neighbours_shown(v: Visit) -> list[tuple[str, str]]:
    return [
        (li.query_selector("button").inner_text(), li.query_selector(".sim").inner_text())
        for li in v.page.query_selector_all("#neighbors li")
    ]


def test_swagger_ui_renders_offline(visit: Any, server: LiveServer, tmp_path: Path) -> None:
    v = visit({"X-API-Key": API_KEY})  # /docs needs the key, as every route but /health
    v.page.goto(f"{server.url}/docs")
    v.page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)
    paths = v.page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
    assert {"/predict", "/embeddings/{column}/{value}/neighbors", "/explore/data/{column}"} <= set(
        "".join(p.split()) for p in paths
    ), paths
    v.page.screenshot(path=tmp_path / "docs.png")
    print(f"screenshot: {tmp_path / 'docs.png'}")
    assert v.refused == [] and v.errors == []


def test_redoc_renders_offline(visit: Any, server: LiveServer, tmp_path: Path) -> None:
    v = visit({"X-API-Key": API_KEY})
    v.page.goto(f"{server.url}/redoc")
    v.page.wait_for_selector(".api-content h2", timeout=20_000)
    assert "Score records" in v.page.inner_text(".api-content")
    v.page.screenshot(path=tmp_path / "redoc.png")
    print(f"screenshot: {tmp_path / 'redoc.png'}")
    assert v.refused == []
    # ReDoc's footer names a logo on its vendor's CDN: the page's policy stops it in the browser
    assert all("Content Security Policy" in e and "cdn.redoc.ly" in e for e in v.errors), v.errors


def test_explorer_draws_10k_points_and_lists_the_neighbours(
    visit: Any, server: LiveServer, tmp_path: Path
) -> None:
    v = visit()  # no header: the page is behind the key, and its 401 asks for it
    page = v.page
    page.goto(f"{server.url}/explore")
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.evaluate("() => window.embedkitExplorer") is None  # the key page, not the explorer
    assert all("401" in e for e in v.errors), v.errors  # the browser logs the refused first request
    v.errors.clear()
    page.fill("#key", API_KEY)
    page.press("#key", "Enter")  # the key page sets the key and reloads: then the explorer opens
    v.until(
        "window.embedkitExplorer !== undefined && window.embedkitExplorer.column() === 'item' "
        "&& window.embedkitExplorer.drawMs() > 0"
    )
    assert page.eval_on_selector_all("#column option", "os => os.map(o => o.value)") == [
        "item",
        "city",
        "level",
    ]
    assert page.inner_text("#column-info").startswith("10,000 categories")
    painted = page.evaluate(
        """() => {
        const c = document.getElementById('points');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
        return n;
    }"""
    )
    assert painted > 20_000, painted  # thousands of points drawn, not a blank canvas
    assert page.evaluate("() => window.embedkitExplorer.drawMs()") < 1000  # one redraw of 10,000 points

    # hover shows the category and its count; a click lists the neighbours the JSON route gives
    at = page.evaluate("() => window.embedkitExplorer.pointAt('item-00040')")
    page.mouse.move(at["x"], at["y"])
    page.wait_for_selector("#tooltip:not([hidden])")
    assert page.inner_text("#tooltip").startswith("item-00040\ncount ")
    page.mouse.click(at["x"], at["y"])
    v.until("document.querySelectorAll('#neighbors li').length === 10")
    assert page.inner_text("#selected") == "item-00040"
    assert neighbours_shown(v) == neighbours_json(server, "item", "item-00040")
    page.screenshot(path=tmp_path / "explore-click.png")

    # the search box finds a category by name; Enter selects the best match
    page.fill("#search", "item-0777")
    page.wait_for_selector("#matches li")
    first = page.inner_text("#matches li:first-child span")
    assert first.startswith("item-0777")
    page.press("#search", "Enter")
    v.until(f"document.getElementById('selected').textContent === {first!r}")
    v.until("document.querySelectorAll('#neighbors li').length === 10")
    assert neighbours_shown(v) == neighbours_json(server, "item", first)
    page.screenshot(path=tmp_path / "explore-search.png")

    # another column, of integers: the value goes into the URL as text and comes back as an integer
    page.select_option("#column", "level")
    v.until("window.embedkitExplorer.column() === 'level'")
    v.until("window.embedkitExplorer.pointAt(7) !== null")
    page.select_option("#k", "5")
    at = page.evaluate("() => window.embedkitExplorer.pointAt(7)")
    page.mouse.click(at["x"], at["y"])
    v.until("document.querySelectorAll('#neighbors li').length === 5")
    assert neighbours_shown(v) == neighbours_json(server, "level", "7", k=5)
    assert page.evaluate("() => location.hash") == "#column=level&value=7"
    page.screenshot(path=tmp_path / "explore-level.png")
    print(f"screenshots: {tmp_path}")
    assert v.refused == [] and v.errors == []


def test_explorer_takes_the_key_from_the_address_and_forgets_it(visit: Any, server: LiveServer) -> None:
    v = visit()
    v.page.goto(f"{server.url}/explore#key={API_KEY}&column=city&value=city%203")
    # the key page takes the key from the address, sets it and reloads: then the explorer opens
    v.until("window.embedkitExplorer !== undefined && window.embedkitExplorer.column() === 'city'")
    v.errors = [e for e in v.errors if "401" not in e]  # the first request, before the key page set it
    v.until("document.querySelectorAll('#neighbors li').length === 10")
    assert v.page.inner_text("#selected") == "city 3"
    assert API_KEY not in v.page.url  # out of the address bar (and history) at once
    assert v.page.is_hidden("#key-form")
    assert v.refused == [] and v.errors == []
