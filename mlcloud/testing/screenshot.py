"""A screenshot of a running washboard, taken with Debian's chromium through Playwright.

    python -m mlcloud.testing.screenshot --url http://127.0.0.1:4000/ --out docs/washboard.png

Also where the browser tests get their browser: :func:`launch_chromium` starts the system
chromium (no browser download) with the flags that keep it quiet and offline, and
:func:`washboard_page` opens a stack's washboard in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mlcloud.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def launch_chromium(playwright: Any, executable: str = CHROMIUM) -> Any:
    """A headless chromium; ``--no-sandbox`` only as root, where chromium refuses to start without it."""
    args = list(CHROMIUM_ARGS)
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return await playwright.chromium.launch(executable_path=executable, args=args, headless=True)


@contextlib.asynccontextmanager
async def washboard_page(settings: Settings, *, timeout_ms: float = 30_000, width: int = 1440,
                         height: int = 900) -> AsyncIterator[Any]:
    """A chromium page on a washboard of the lattice ``settings`` name, served on a free port and
    signed in with the state dir's token. JavaScript errors on the page fail the block."""
    from playwright.async_api import async_playwright

    from mlcloud.servers import running_app
    from mlcloud.washboard.access import load_or_create_token
    from mlcloud.washboard.app import create_washboard

    token = load_or_create_token(settings.state_dir)
    app = create_washboard(settings, token=token, poll_interval=0.5)
    async with running_app(app, "127.0.0.1:0", "the washboard", access_log=None) as address, \
            async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"http://{address}/#token={token}")
            yield page
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            await browser.close()


async def capture(page: Any, path: Path) -> None:
    """Wait until the page shows live data, then save a full-page screenshot."""
    await page.wait_for_selector("#conn.live", timeout=20_000)
    # Relative times render on the next tick; let one pass so none shows a placeholder.
    await page.wait_for_timeout(1100)
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path), full_page=True)


async def take_screenshot(url: str, path: Path, *, width: int = 1440, height: int = 900,
                          color_scheme: str = "light") -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height}, color_scheme=color_scheme)
            await page.goto(url)
            await capture(page, path)
        finally:
            await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4000/")
    parser.add_argument("--out", type=Path, default=Path("docs/washboard.png"))
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--dark", action="store_true", help="Use the dark colour scheme.")
    options = parser.parse_args()
    asyncio.run(take_screenshot(options.url, options.out, width=options.width, height=options.height,
                                color_scheme="dark" if options.dark else "light"))
    print(f"saved {options.out}")


if __name__ == "__main__":
    main()
