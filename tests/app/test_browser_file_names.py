"""Own images with long, odd file and folder names in a real browser (Playwright + Debian's Chromium): at 1024 px
the Inspect page's cards show each file's name on one line, shortened after its first third where it is longer
and never broken mid-word (a camera's names ran down the card a few letters a line), written as named (a Markdown
star, a dollar sign or an :emoji: code in a name stays text), the whole path on hover; a class folder's long name
gets a line of its own."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from apphelpers import APP, shown_as  # noqa: F401  (APP puts the app's `explorer` package on the path)
from PIL import Image
from test_browser import (
    CLIPPED_JS,
    READABLE,
    TIMEOUT_MS,
    _settle,
    browser_tab,
    open_every_expander,
    pytestmark,  # noqa: F401
    serve_app,
)

from explorer import cards
from explorer.cache import CARD_PX
from influence import classifier, store
from influence.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from influence.data import prepare
from influence.estimator import estimate
from influence.train import train

CLASSES = ("holiday-photos-from-the-2024-summer-trip", "scans")


def _name(i: int) -> str:
    return (f"IMG20240817183045{i:06d}HDRportraitmodeenhanced.png" if i % 3 == 0 else
            f"*draft*_$1$_:smile:_number_{i:04d}.png" if i % 3 == 1 else f"s{i}.png")


@pytest.fixture(scope="module")
def named_server(tmp_path_factory):
    """The app over a run on 120 images in two class folders, some in a sub-folder, named as above."""
    base = tmp_path_factory.mktemp("names")
    images = base / "images"
    rng = np.random.default_rng(0)
    for i in range(120):
        rel = Path(CLASSES[i % 2]) / ("camera-roll-exported-originals" if i % 5 == 0 else "") / _name(i)
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        img = np.full((32, 32, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        img[8:24, 8:24] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(images / rel)
    cfg = prepare(RunConfig(
        preset="namestest",
        data=DataConfig(source="folder", root=str(images), image_size=32, color="rgb", n_valid=20, n_test=20),
        model=ModelConfig(arch="dcgan", width=4, z_dim=8),
        train=TrainConfig(epochs=1, batch_size=40, lr_d=0.001, lr_g=0.001),
        eval=EvalConfig(n_valid_z=40, n_test_z=40, n_grid=16, feature="autoencoder"),
    ))
    root = base / "store"
    with mock.patch.object(classifier, "AE_STEPS", 20):
        estimate(train(cfg, root), ["fid"])
    store.write_json(root / "_app_state.json", {"run_id": cfg.run_id})
    with serve_app(root, base / "streamlit.log") as url:
        yield url, {p.relative_to(images).as_posix() for p in images.rglob("*.png")}


def test_long_file_names_read_whole_on_the_cards_at_1024_px(named_server):
    from playwright.sync_api import expect

    url, paths = named_server
    with browser_tab(height=1500) as page:
        page.set_viewport_size({"width": 1024, "height": 1500})
        page.goto(f"{url}/curate")
        expect(page.locator("h1").first).to_have_text("Inspect and curate", timeout=TIMEOUT_MS)
        _settle(page)
        open_every_expander(page)
        assert page.evaluate(CLIPPED_JS) == READABLE
        captions = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]')
        files = captions.filter(has=page.locator('[data-testid="stTooltipIcon"]'))
        shown = [t.strip() for t in files.all_inner_texts()]
        assert len(shown) == 25  # one a card of the gallery's page
        assert all(shown_as(s, paths) for s in shown), shown
        assert any(s.startswith("*dr") for s in shown)
        # a camera's names differ in the middle: each card keeps that part ("IMG2…nced.png" on all of them before)
        camera = [s for s in shown if s.startswith("IM")]
        assert len(camera) >= 5 and len(set(camera)) == len(camera), camera
        # ... and each name stays on one line with its help icon (two ellipses once pushed the icon below)
        heights = files.evaluate_all("els => els.map(e => e.getBoundingClientRect().height)")
        assert max(heights) < 1.5 * min(heights), dict(zip(shown, heights))
        # the long class name on a line of its own, shortened to the card's line
        label = cards.fit(CLASSES[0], int((CARD_PX - cards.PADDING_PX) / cards.CAPTION_CHAR_PX))
        assert label != CLASSES[0] and label in [t.strip() for t in captions.all_inner_texts()]
        files.first.locator('[data-testid="stTooltipIcon"]').hover()
        tip = page.locator('[data-testid="stTooltipContent"]')
        expect(tip).to_be_visible()
        assert tip.inner_text().strip() in paths
