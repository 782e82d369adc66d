"""The washboard in a real headless browser (Debian's chromium driven by Playwright).

Each test starts NATS, a host running real component processes and the washboard on free
ports, opens the page and waits for conditions (no fixed sleeps): the lattice appears healthy,
a killed provider turns unhealthy then healthy again, scaling from the page changes the
instance count, and the page says so when NATS goes away and recovers by itself.

``MLCLOUD_UPDATE_SCREENSHOT=1`` also writes docs/washboard.png from the first test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from mlcloud.lattice.nats_server import NatsServer
from mlcloud.servers import free_port, running_app
from mlcloud.testing.screenshot import CHROMIUM, capture, launch_chromium
from mlcloud.washboard.app import create_washboard
from tests.conftest import PROJECT
from tests.washboard.conftest import Lattice, Washboard

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium"),
]

WAIT_MS = 45_000  # generous: starting instance processes is slow on a loaded 2-core machine


@pytest.fixture
async def browser():
    playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
    async with playwright_api.async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser):
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def row(page, table: str, name: str):
    return page.locator(f"#{table} tbody tr[data-name='{name}']")


async def wait_text(locator, text: str) -> None:
    """Wait until ``locator`` shows exactly ``text``, found again on each read: a row drawn anew
    while waiting would leave an element handle behind."""
    async with asyncio.timeout(WAIT_MS / 1000):
        while (await locator.inner_text()).strip() != text:
            await asyncio.sleep(0.05)


async def test_page_shows_hosts_actors_providers_links_and_models(page, washboard: Washboard, lattice: Lattice):
    await page.goto(washboard.page_url)
    await page.wait_for_selector("#conn.live")
    host_card = page.locator(f"#hosts [data-host='{lattice.host.id}']")
    await host_card.wait_for()
    assert "zone=lab" in await host_card.inner_text()
    # The suite's hosts run local folders, so they are in development mode, and the card says so.
    assert await host_card.locator(".badge.dev").inner_text() == "dev mode"
    for name in ("caller", "router"):
        await row(page, "actors", name).locator(".badge.healthy").wait_for()
    for name in ("echo", "inference-fixture"):
        await row(page, "providers", name).locator(".badge.healthy").wait_for()
    for route in ("mobilenetv27", "identity", "plus3"):
        await page.locator(f"#models tr[data-route='{route}'] .badge.ready").wait_for()
    failed = page.locator("#models tr[data-route='squeezenet']")
    await failed.locator(".badge.failed").wait_for()
    assert "InvoiceNotFound" in await failed.inner_text()
    links = page.locator("#links tbody tr")
    await page.wait_for_function("document.querySelectorAll('#links tbody tr[data-contract]').length === 2")
    links_text = await links.all_inner_texts()
    assert "abc123" not in "".join(links_text) and "s3cret" not in "".join(links_text)
    assert "••••••" in "".join(links_text)
    router = await row(page, "actors", "router").inner_text()
    assert "wasmcloud:mlinference" in router and "1 on" in router
    # The washboard started before the lattice (fixture order), so its feed holds the start-up,
    # and the page shows it from the snapshot: every kind of start event, one row per component.
    for name, count in (("host_started", 1), ("actor_started", 2), ("provider_started", 2), ("linkdef_set", 2)):
        events = page.locator(f"#feed li.event[data-name='{name}']")
        await events.nth(count - 1).wait_for()
        assert await events.count() == count, name
    assert not await page.locator("#banner").is_visible()

    if os.environ.get("MLCLOUD_UPDATE_SCREENSHOT"):
        # Give the feed something to show: events from before the page opened are not replayed.
        await lattice.ctl.scale_actor(lattice.host.id, lattice.caller, 2)
        await page.locator("#feed li[data-name='actor_started']").first.wait_for()
        await wait_text(row(page, "actors", "caller").locator(".instances .count"), "2")
        await capture(page, PROJECT / "docs" / "washboard.png")


async def test_killed_provider_turns_unhealthy_then_healthy_again(page, washboard: Washboard, lattice: Lattice):
    await page.goto(washboard.page_url)
    echo = row(page, "providers", "echo")
    await echo.locator(".badge.healthy").wait_for()
    # Record every status the row shows: the unhealthy spell lasts only until the restart.
    await page.evaluate("""() => {
        window.seenEchoStatus = [];
        const record = () => {
            const badge = document.querySelector("#providers tr[data-name='echo'] .badge");
            const last = window.seenEchoStatus[window.seenEchoStatus.length - 1];
            if (badge && badge.textContent !== last) window.seenEchoStatus.push(badge.textContent);
        };
        new MutationObserver(record).observe(document.getElementById("providers"), {childList: true, subtree: true});
        record();
    }""")
    inventory = await lattice.ctl.get_inventory(lattice.host.id)
    pid = next(p for p in inventory.providers if p.name == "echo").instances[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await page.wait_for_function("window.seenEchoStatus.includes('unhealthy')")
    await page.wait_for_function("""() => {
        const s = window.seenEchoStatus;
        return s.indexOf('unhealthy') >= 0 && s[s.length - 1] === 'healthy'
            && s.lastIndexOf('healthy') > s.indexOf('unhealthy');
    }""")
    await wait_text(echo.locator("td.restarts"), "1")
    await page.locator("#feed li[data-name='health_check_failed']").first.wait_for()


async def test_scaling_an_actor_from_the_page(page, washboard: Washboard, lattice: Lattice):
    await page.goto(washboard.page_url)
    caller = row(page, "actors", "caller")
    await caller.locator(".badge.healthy").wait_for()
    await wait_text(caller.locator(".instances .count"), "1")
    await caller.get_by_role("button", name="Scale…").click()
    dialog = page.locator("#dialog")
    await dialog.wait_for(state="visible")
    assert "Scale actor caller" in await dialog.inner_text()
    await page.fill("#scale-count", "3")
    await page.click("#dialog-confirm")
    await dialog.wait_for(state="hidden")
    await wait_text(caller.locator(".instances .count"), "3")
    assert "token" not in page.url  # the page took the token out of the address bar
    await caller.locator(".badge.healthy").wait_for()
    inventory = await lattice.ctl.get_inventory(lattice.host.id)
    assert len(next(a for a in inventory.actors if a.name == "caller").instances) == 3

    # Cancelling changes nothing; an impossible count is refused with the server's reason.
    await caller.get_by_role("button", name="Scale…").click()
    await page.fill("#scale-count", "999")
    await page.evaluate("document.getElementById('scale-count').removeAttribute('max')")
    await page.click("#dialog-confirm")
    await page.locator("#dialog-error").wait_for(state="visible")
    assert "between 0 and" in await page.inner_text("#dialog-error")
    await page.click("#dialog-cancel")
    await dialog.wait_for(state="hidden")
    await wait_text(caller.locator(".instances .count"), "3")


async def test_without_the_token_the_page_says_where_to_get_it_and_the_log_never_shows_it(
        page, washboard: Washboard, lattice: Lattice, caplog):
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    await page.goto(washboard.url)
    caller = row(page, "actors", "caller")
    await caller.locator(".badge.healthy").wait_for()
    await caller.get_by_role("button", name="Scale…").click()
    await page.fill("#scale-count", "2")
    await page.click("#dialog-confirm")
    await page.locator("#dialog-error").wait_for(state="visible")
    assert "Unauthorized" in await page.inner_text("#dialog-error")
    assert "#token=" in await page.inner_text("#dialog-error")  # where the token is
    await page.click("#dialog-cancel")

    await page.goto(washboard.page_url)
    await caller.get_by_role("button", name="Scale…").click()
    await page.fill("#scale-count", "2")
    await page.click("#dialog-confirm")
    await wait_text(caller.locator(".instances .count"), "2")
    await caller.locator(".badge.healthy").wait_for()
    logged = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("/scale" in line for line in logged)
    assert not any(washboard.token in line for line in logged)


async def test_stopping_and_starting_a_provider_from_the_page(page, washboard: Washboard, lattice: Lattice):
    await page.goto(washboard.page_url)
    echo = row(page, "providers", "echo")
    await echo.locator(".badge.healthy").wait_for()
    await echo.get_by_role("button", name="Stop…").click()
    assert "Stop provider echo?" in await page.inner_text("#dialog-title")
    await page.click("#dialog-confirm")
    await echo.locator(".badge.stopped").wait_for()
    await echo.get_by_role("button", name="Start…").click()
    assert "hunter2" not in await page.inner_text("#dialog-body")  # the config shown is masked
    await page.click("#dialog-confirm")
    await echo.locator(".badge.healthy").wait_for()
    inventory = await lattice.ctl.get_inventory(lattice.host.id)
    assert "echo" in [p.name for p in inventory.providers]


async def test_page_says_nats_is_away_and_recovers_by_itself(page, tmp_path, settings):
    port = free_port()
    server = NatsServer(tmp_path / "own-nats", port=port)
    own = settings.replace(nats_url=server.url)
    await server.start()
    try:
        app = create_washboard(own, token="unused", poll_interval=0.5)
        async with running_app(app, "127.0.0.1:0", "washboard") as address:
            await page.goto(f"http://{address}/")
            await page.wait_for_selector("#conn.live")
            await server.stop()
            banner = page.locator("#banner")
            await banner.wait_for(state="visible")
            await page.wait_for_function(
                "/NATS is away.*data is [0-9]+ s stale/.test(document.getElementById('banner').textContent)"
            )
            await server.start()
            await banner.wait_for(state="hidden")
            await page.wait_for_selector("#conn.live")
    finally:
        await server.stop()


async def test_phone_layout_stacks_tables_into_cards(browser, washboard: Washboard, lattice: Lattice):
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = await context.new_page()
        await page.goto(washboard.page_url)
        caller = row(page, "actors", "caller")
        await caller.locator(".badge.healthy").wait_for()
        assert not await page.locator("#actors thead").is_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    finally:
        await context.close()


@pytest.mark.slow
async def test_an_experiment_shows_each_arms_share_and_reward_posterior_live(page, tmp_path):
    import httpx

    import mlcloud
    from mlcloud.testing.stack import MODELS_DIR, running_stack

    model = MODELS_DIR / "build" / "identity_model-0.2.0" / "identity_model.onnx"
    tensor = {"dimensions": [1, 4], "valueTypes": ["ValueF32"], "flags": 0, "data": [0] * 16}
    async with running_stack(tmp_path / "stack") as stack, \
            httpx.AsyncClient(base_url=stack.http_url, timeout=30) as http:
        for version in ("1.0.0", "2.0.0"):
            await asyncio.to_thread(mlcloud.deploy, model, "ab", version, settings=stack.settings,
                                    progress=lambda _: None)
        await asyncio.to_thread(mlcloud.split, "ab", policy="thompson", settings=stack.settings,
                                progress=lambda _: None)

        async def serve(count: int) -> None:
            """Requests, each rewarded 1 on 2.0.0 and 0 on 1.0.0 (once the api has the split: its
            link watch follows the link bucket a few milliseconds after ``split`` returns)."""
            while count:
                reply = await http.post("/ab", json=tensor)
                if "x-split-arm" not in reply.headers:
                    continue
                count -= 1
                reward = 1 if reply.headers["x-split-arm"] == "2.0.0" else 0
                feedback = {"request_id": reply.headers["x-request-id"], "reward": reward}
                assert (await http.post("/ab/feedback", json=feedback)).status_code == 200

        await serve(30)
        token = "t" * 32
        app = create_washboard(stack.settings, token=token, poll_interval=0.5)
        async with running_app(app, "127.0.0.1:0", "the washboard") as address:
            await page.goto(f"http://{address}/#token={token}")
            arms = {v: page.locator(f"#experiments tr[data-split='ab'][data-version='{v}']")
                    for v in ("1.0.0", "2.0.0")}
            report = {a["version"]: a for a in (await http.get("/experiments")).json()[0]["arms"]}
            for version, arm in arms.items():
                await wait_text(arm.locator(".rewards"), str(report[version]["rewards"]))
                assert await arm.locator(".mean").inner_text() == f"{report[version]['mean']:.3f}"
                interval = await arm.locator(".interval-text").inner_text()
                assert interval == f"{report[version]['low']:.3f} – {report[version]['high']:.3f}"
                assert (await arm.locator(".share-text").inner_text()).endswith(" %")
            assert "thompson" in await arms["2.0.0"].inner_text()

            await serve(10)  # live: the page follows without a reload
            report = {a["version"]: a for a in (await http.get("/experiments")).json()[0]["arms"]}
            assert sum(a["rewards"] for a in report.values()) == 40
            for version, arm in arms.items():
                await wait_text(arm.locator(".rewards"), str(report[version]["rewards"]))
            if os.environ.get("MLCLOUD_UPDATE_SCREENSHOT"):
                await page.locator("#h-experiments").scroll_into_view_if_needed()
                await page.locator("#experiments").screenshot(path=str(PROJECT / "docs" / "experiments.png"))
