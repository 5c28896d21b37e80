"""GraphiQL on GET /graphql: our page, its assets served by the app, and a real browser run.

The browser test drives headless Chromium (Debian's `chromium` and `chromium-driver`)
through Selenium against a real `reelgraph serve` process. Without Chromium it is skipped,
except under CI (`CI` set), where it fails: CI must not pass by skipping it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

import graphiql
from db.engine import Database
from resolvers.ids import encode_id
from settings import Settings
from tests.conftest import make_account, running_app
from tests.factories import insert_stream, insert_vods, vod_values
from tests.test_cli import ROOT, env_for, reelgraph, serve

ARTIFACTS = ROOT / "test-artifacts"
REPO_GRAPHIQL = Settings().graphiql_dir  # graphiql/ in this checkout
IN_CI = bool(os.environ.get("CI"))


def unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI must run this test, not skip it)")
    pytest.skip(reason)


def fake_build(directory: Path) -> dict[str, bytes]:
    """node_modules holding the files the page needs, with recognisable contents."""
    contents = {}
    for asset in graphiql.ASSETS:
        path = directory / "node_modules" / asset.package / asset.file
        path.parent.mkdir(parents=True, exist_ok=True)
        contents[asset.name] = f"/* {asset.package}@{asset.version} {asset.file} */".encode()
        path.write_bytes(contents[asset.name])
    (directory / "node_modules" / "graphiql" / "package.json").write_text("{}")
    return contents


def sri(path: Path) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()


# --- the page and its assets, over ASGI ---------------------------------------------------


async def test_page_uses_the_assets_served_by_the_app_when_built(
    database_url: str, tmp_path: Path
) -> None:
    contents = fake_build(tmp_path)
    async with running_app(Settings(database_url=database_url, graphiql_dir=tmp_path)) as client:
        page = await client.http.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "unpkg.com" not in page.text and "https://" not in page.text
        for asset in graphiql.ASSETS:
            assert f'"/graphiql/assets/{asset.name}?v={asset.version}"' in page.text
        assert '<script src="/graphiql/assets/reelgraph.js?v=' in page.text
        assert "<script>" not in page.text  # no inline script: CSP allows 'self' only
        csp = dict(
            d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";")
        )
        assert csp["script-src"] == "'self'"
        assert csp["connect-src"] == "'self'" and csp["default-src"] == "'none'"
        assert "Bearer <paste a token" in page.text.replace("\\u003c", "<")
        assert "Authorization" in page.text and "Headers" in page.text  # the visible hint

        for asset in graphiql.ASSETS:
            served = await client.http.get(f"/graphiql/assets/{asset.name}?v={asset.version}")
            assert served.status_code == 200 and served.content == contents[asset.name]
            assert served.headers["content-type"].split(";")[0] in ("text/javascript", "text/css")
            assert "immutable" in served.headers["cache-control"]
        boot = await client.http.get("/graphiql/assets/reelgraph.js")
        assert boot.status_code == 200 and "GraphiQL.createFetcher" in boot.text
        # Only the listed files: nothing else in node_modules, nothing outside it.
        for name in ("package.json", "index.js", "..%2Fpackage.json", "graphiql.min.js"):
            assert (await client.http.get(f"/graphiql/assets/{name}")).status_code == 404
        assert (await client.http.get("/graphiql/assets/graphiql/package.json")).status_code == 404


async def test_page_falls_back_to_the_cdn_when_not_built(database_url: str, tmp_path: Path) -> None:
    async with running_app(Settings(database_url=database_url, graphiql_dir=tmp_path)) as client:
        page = await client.http.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        for asset in graphiql.ASSETS:
            url = f"https://unpkg.com/{asset.package}@{asset.version}/{asset.file}"
            assert f'"{url}" integrity="{asset.integrity}" crossorigin="anonymous"' in page.text
            missing = await client.http.get(f"/graphiql/assets/{asset.name}")
            assert missing.status_code == 404
        assert "reelgraph build-graphiql" in page.text
        # The page's own script is still served by the app.
        assert (await client.http.get("/graphiql/assets/reelgraph.js")).status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self' https://unpkg.com;" in csp
        # GET with a query still never executes; JSON clients still get 405.
        get = await client.http.get("/graphql", params={"query": "{ viewer { id } }"})
        assert get.status_code == 405


def test_pinned_versions_are_the_lockfile_versions() -> None:
    lock = json.loads((REPO_GRAPHIQL / "package-lock.json").read_text())
    manifest = json.loads((REPO_GRAPHIQL / "package.json").read_text())
    for asset in graphiql.ASSETS:
        assert lock["packages"][f"node_modules/{asset.package}"]["version"] == asset.version
        assert manifest["dependencies"][asset.package] == asset.version


# --- `reelgraph build-graphiql` -------------------------------------------------------------


def test_build_graphiql_without_npm_says_the_cdn_is_used(tmp_path: Path) -> None:
    shutil.copy(REPO_GRAPHIQL / "package-lock.json", tmp_path)
    env = env_for(None, PATH=str(tmp_path / "no-npm-here"), REELGRAPH_GRAPHIQL_DIR=str(tmp_path))
    result = reelgraph("build-graphiql", env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "npm is not on PATH" in result.stdout and "CDN" in result.stdout
    assert not (tmp_path / "node_modules").exists()


def test_build_graphiql_installs_the_pinned_files_from_the_lockfile(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        unavailable("npm is not installed")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(REPO_GRAPHIQL / name, tmp_path)
    result = reelgraph(
        "build-graphiql", env=env_for(None, REELGRAPH_GRAPHIQL_DIR=str(tmp_path)), timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = graphiql.built_assets(tmp_path)
    assert files is not None
    # The bytes served locally are the bytes the CDN fallback pins.
    for asset in graphiql.ASSETS:
        assert sri(files[asset.name]) == asset.integrity, asset


# --- a real browser ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def offline_assets() -> Path:
    """graphiql/node_modules, installed with `reelgraph build-graphiql` when missing."""
    if graphiql.built_assets(REPO_GRAPHIQL) is None:
        if shutil.which("npm") is None:
            unavailable("GraphiQL's assets are not built and npm is not installed")
        result = reelgraph("build-graphiql", env=env_for(None), timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    assert graphiql.built_assets(REPO_GRAPHIQL) is not None
    return REPO_GRAPHIQL


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        unavailable("Chromium and chromedriver are not installed (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
# The Headers or Variables pane, whichever is open.
TOOL_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"


def editor_text(driver: WebDriver, editor: WebElement) -> str:
    value: str = driver.execute_script("return arguments[0].CodeMirror.getValue()", editor)
    return value


def type_into(driver: WebDriver, editor: WebElement, text: str) -> str:
    """Replace a CodeMirror editor's text by typing, as a user does; return what it holds."""
    editor.click()
    keys = ActionChains(driver)
    keys.key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys(Keys.DELETE)
    keys.send_keys(text).perform()
    return editor_text(driver, editor)


def type_token(driver: WebDriver, headers_editor: WebElement, token: str) -> None:
    """Type the Authorization header into the Headers pane, as a user does."""
    headers = type_into(driver, headers_editor, f'{{"Authorization": "Bearer {token}"}}')
    assert json.loads(headers) == {"Authorization": f"Bearer {token}"}


def response_text(driver: WebDriver) -> str | None:
    text: str = driver.find_element(By.CSS_SELECTOR, ".graphiql-response").text
    return text if '"data"' in text or '"errors"' in text else None


def run_in_graphiql(driver: WebDriver, base: str, token: str, query: str) -> str:
    """Open GraphiQL, type the token and the query, press run; return the result pane."""
    driver.get(f"{base}/graphql")
    wait = WebDriverWait(driver, 30)
    query_editor = wait.until(visible(QUERY_EDITOR))
    headers_editor = wait.until(visible(TOOL_EDITOR))
    assert "Bearer <paste a token" in editor_text(driver, headers_editor)  # where it goes

    type_token(driver, headers_editor, token)
    typed = type_into(driver, query_editor, query)
    assert " ".join(typed.split()) == query, typed
    # GraphiQL has parsed the new document once the tab is named after its operation.
    name = query.split()[1]
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".graphiql-tab-active").text == name)
    driver.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()
    result = wait.until(response_text)
    assert result is not None
    return result


def visible(selector: str) -> Any:
    return expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, selector))


async def test_graphiql_runs_a_query_in_headless_chromium(
    database_url: str, db: Database, offline_assets: Path, browser: WebDriver
) -> None:
    ada = await make_account(db, "ada", "creator")
    bob = await make_account(db, "bob", "creator")
    rng = random.Random(8)
    titles = ["Offline GraphiQL works", "Second reel from Ada"]
    await insert_vods(db, [vod_values(ada.id, rng, title=t, status="ready") for t in titles])
    await insert_vods(db, [vod_values(bob.id, rng, title="Bob's hidden VOD")])
    query = "query AdaReels { viewer { username } vods(first: 5) { totalCount nodes { title } } }"

    def scenario() -> tuple[str, list[str], str, list[dict[str, Any]]]:
        with serve(database_url, REELGRAPH_GRAPHIQL_DIR=str(REPO_GRAPHIQL)) as server:
            base = server.base
            result = run_in_graphiql(browser, base, ada.token, query)
            browser.find_element(By.CSS_SELECTOR, "[aria-label^='Prettify query']").click()
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "graphiql.png"))
            loaded = browser.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            )
            return result, loaded, base, browser.get_log("browser")  # type: ignore[attr-defined]

    result, loaded, base, console = await asyncio.to_thread(scenario)
    assert '"totalCount": 2' in result, result
    assert '"username": "ada"' in result
    for title in titles:
        assert title in result
    assert "Bob's hidden VOD" not in result
    # Everything came from this server (no CDN), and the console has no error (e.g. CSP).
    assert all(url.startswith(base + "/") for url in loaded), loaded
    assets = {url.split("?")[0].rsplit("/", 1)[1] for url in loaded if "/graphiql/assets/" in url}
    assert assets == {a.name for a in graphiql.ASSETS} | {"reelgraph.js", "reelgraph.css"}
    assert not [entry for entry in console if entry["level"] == "SEVERE"], console


def open_subscriptions(base: str) -> int:
    """`reelgraph_graphql_websocket_operations` on /metrics: subscriptions open right now."""
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("reelgraph_graphql_websocket_operations "):
            return int(float(line.split()[1]))
    raise AssertionError("no reelgraph_graphql_websocket_operations on /metrics")


def run_example_subscription(driver: WebDriver, base: str, token: str, stream_id: str) -> str:
    """Open the page's LiveHealth example tab, give it a token and a stream id, run its
    `LiveStreamHealth` subscription (picked from the run button's menu, as a user does);
    return the result pane once the first event is there."""
    driver.get(f"{base}/graphql")
    wait = WebDriverWait(driver, 30)
    wait.until(visible(QUERY_EDITOR))
    tab = wait.until(lambda d: element_with_text(d, ".graphiql-tab", "LiveHealth"))
    assert tab is not None
    tab.find_element(By.CSS_SELECTOR, "button").click()  # headers are per tab: pick it first
    wait.until(lambda d: element_with_text(d, ".graphiql-tab-active", "LiveHealth"))
    type_token(driver, wait.until(visible(TOOL_EDITOR)), token)
    driver.find_element(By.CSS_SELECTOR, "button[data-name='variables']").click()
    variables = type_into(
        driver, wait.until(visible(TOOL_EDITOR)), f'{{"streamId": "{stream_id}"}}'
    )
    assert json.loads(variables) == {"streamId": stream_id}
    driver.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()
    # Two operations in the tab: the run button offers both.
    choice = wait.until(lambda d: element_with_text(d, "[role='menuitem']", "LiveStreamHealth"))
    assert choice is not None
    choice.click()
    result = wait.until(response_text)
    assert result is not None
    return result


def element_with_text(driver: WebDriver, selector: str, text: str) -> WebElement | None:
    return next(
        (e for e in driver.find_elements(By.CSS_SELECTOR, selector) if e.text == text), None
    )


async def test_graphiql_runs_the_example_subscription_over_the_websocket(
    database_url: str, db: Database, offline_assets: Path, browser: WebDriver
) -> None:
    """The LiveHealth example's `liveStreamHealth` streams real events over
    graphql-transport-ws (the Headers pane's token travels in connection_init, the CSP
    allows the WebSocket), and the stop button ends the subscription on the server."""
    ada = await make_account(db, "ada", "creator")
    pk = await insert_stream(
        db, owner_id=ada.id, status="live", started_at=datetime.now(UTC), viewer_count_current=42
    )
    stream_id = encode_id("LiveStream", pk)

    def scenario() -> tuple[str, int, str, int, list[dict[str, Any]]]:
        with serve(database_url, REELGRAPH_GRAPHIQL_DIR=str(REPO_GRAPHIQL)) as server:
            base = server.base
            first = run_example_subscription(browser, base, ada.token, stream_id)
            wait = WebDriverWait(browser, 30)
            stop = wait.until(visible("[aria-label='Stop query (Ctrl-Enter)']"))
            # Events keep coming: the measurement time moves on (an event every 2 s).
            later = wait.until(lambda d: (text := response_text(d)) != first and text)
            assert later
            running = open_subscriptions(base)
            stop.click()
            wait.until(visible("[aria-label='Execute query (Ctrl-Enter)']"))
            deadline = time.monotonic() + 10
            while (stopped := open_subscriptions(base)) and time.monotonic() < deadline:
                time.sleep(0.1)
            console = browser.get_log("browser")  # type: ignore[attr-defined]
            return first, running, later, stopped, console

    first, running, later, stopped, console = await asyncio.to_thread(scenario)
    for event in (first, later):
        data = json.loads(event)
        assert "errors" not in data, event
        assert data["data"]["liveStreamHealth"]["viewerCount"] == 42
    assert running == 1 and stopped == 0  # over the WebSocket, and really ended
    assert not [entry for entry in console if entry["level"] == "SEVERE"], console
