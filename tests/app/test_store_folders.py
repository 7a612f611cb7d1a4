"""Folders in the store that are not runs (issue 23.10)."""

from __future__ import annotations

import shutil

import pytest

from apphelpers import open_app, texts, tiny_run_id


@pytest.mark.parametrize("page", ["train", "influence"])
def test_a_copied_run_folder_does_not_break_the_run_picker(app_store, page):
    """'<id> (copy)' in the store: before, the sidebar's run picker raised on every page."""
    run_id = tiny_run_id(app_store)
    shutil.copytree(app_store / run_id, app_store / f"{run_id} (copy)")
    at = open_app(page)
    assert not at.exception, at.exception
    assert at.sidebar.selectbox[0].value == run_id
    assert f"`{run_id} (copy)`" in texts(at) and "not a run" in texts(at)
