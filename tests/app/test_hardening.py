"""The app against what issue 23 found: folders in the store that are not runs (23.10), upload limits (23.7)."""

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


def test_a_removal_csv_upload_has_a_size_limit_with_a_clear_message(app_store):
    """Issue 23.7: the CSV uploader took anything up to the server's limit, and parsing cost ~140x the size."""
    from explorer import curation

    from influence.errors import ConfigError
    from influence.removal import MAX_REMOVAL_BYTES

    with pytest.raises(ConfigError, match=f"at most {MAX_REMOVAL_BYTES >> 20} MB"):
        curation.read_removal_upload(b"1\n" * (MAX_REMOVAL_BYTES // 2 + 1), 1000)
    at = open_app("curate")
    uploader = at.file_uploader(key=f"import-{tiny_run_id(app_store)}")
    assert uploader.proto.max_upload_size_mb == MAX_REMOVAL_BYTES >> 20  # the browser refuses larger files
