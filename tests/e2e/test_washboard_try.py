"""The washboard's "Try a model" panel in Chromium against the real stack: an image chosen or
dropped on an image route shows top-k bars, a JSON row pasted for a deployed scikit-learn model
shows its predictions, and bad input shows the error; each answer names its model (X-Model)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
import pytest_asyncio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import mlcloud
from mlcloud.testing.screenshot import CHROMIUM, washboard_page
from mlcloud.testing.stack import PROJECT_DIR

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium"),
]

CAT = PROJECT_DIR / "images" / "cat.jpg"
X, Y = load_iris(return_X_y=True)
WAIT_MS = 45_000  # starting instances and loading models is slow on a loaded 2-core machine


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(stack):
    async with washboard_page(stack.settings, timeout_ms=WAIT_MS) as page:
        await page.wait_for_selector("#conn.live")
        yield page


async def choose_route(page, route: str) -> None:
    await page.locator(f"#try-route option[value='{route}']").wait_for(state="attached")
    await page.select_option("#try-route", route)


async def answered(page) -> None:
    """Wait for the panel's next answer (or error), the previous one cleared first by the caller."""
    await page.locator("#try-result .try-meta, #try-result .try-error").first.wait_for()


async def clear(page) -> None:
    await page.evaluate("document.getElementById('try-result').replaceChildren()")


async def test_an_image_chosen_or_dropped_shows_top_k_bars_naming_a_cat(page, stack, http):
    bindle_id = (await http.get("/models/mobilenetv27")).json()["bindle_id"]
    await choose_route(page, "mobilenetv27")
    await clear(page)
    await page.set_input_files("#try-file", str(CAT))
    await answered(page)
    labels = await page.locator("#try-result .try-bar .try-label").all_inner_texts()
    assert len(labels) == 5 and "cat" in labels[0], labels
    assert await page.locator("#try-result .try-model").inner_text() == bindle_id
    assert "ms" in await page.locator("#try-result .try-latency").inner_text()
    widths = await page.locator("#try-result .try-fill").evaluate_all("els => els.map(e => e.style.width)")
    assert float(widths[0].rstrip("%")) > float(widths[-1].rstrip("%"))

    await clear(page)
    drop = await page.evaluate_handle("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "cat.jpg", { type: "image/jpeg" }));
        return transfer;
    }""", base64.b64encode(CAT.read_bytes()).decode())
    await page.dispatch_event("#try-drop", "drop", {"dataTransfer": drop})
    await answered(page)
    assert await page.locator("#try-result .try-bar .try-label").all_inner_texts() == labels


async def test_a_pasted_row_shows_the_deployed_models_predictions_and_bad_input_its_error(page, stack):
    model = LogisticRegression(max_iter=500).fit(X, Y)
    deployment = await asyncio.to_thread(mlcloud.deploy, model, "petals", sample=X[:5], settings=stack.settings,
                                         progress=lambda _: None)
    await choose_route(page, "petals")
    await page.fill("#try-json", json.dumps(X[0].tolist()))
    await clear(page)
    await page.click("#try-send")
    await answered(page)
    answer = json.loads(await page.locator("#try-result .try-json-answer").inner_text())
    assert answer == {"predictions": model.predict(X[:1]).tolist()}
    assert await page.locator("#try-result .try-model").inner_text() == deployment.bindle_id
    assert await page.locator("#try-result .try-sha").get_attribute("title") == deployment.sha256

    await page.check("#try-proba")
    await page.fill("#try-json", json.dumps({"instances": X[:2].tolist()}))
    await clear(page)
    await page.click("#try-send")
    await answered(page)
    probabilities = json.loads(await page.locator("#try-result .try-json-answer").inner_text())["predictions"]
    assert len(probabilities) == 2 and all(abs(sum(row) - 1) < 1e-4 for row in probabilities)

    for typed, error in [("[5.1, 3.5]", "instances[0]: expected 4 features, got 2"),
                         ('[5.1, 3.5, "wide", 0.2]', "instances[0][2]: 'wide' is not a number"),
                         ("[5.1, 3.5,", "not JSON")]:
        await page.fill("#try-json", typed)
        await clear(page)
        await page.click("#try-send")
        await answered(page)
        assert error in await page.locator("#try-result .try-error").inner_text()
    await clear(page)
    await page.set_input_files("#try-file", str(CAT))
    await answered(page)
    assert "/petals takes rows → predictions, not an image" in await page.locator("#try-result .try-error").inner_text()
