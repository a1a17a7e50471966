"""Scan paths that name no folder this machine can look up are refused with a reason, never a crash."""
from __future__ import annotations

import pytest

from clip_embedder.intake.ingest import ScanPathError, resolve_folder


def test_paths_that_cannot_be_looked_up_are_refused(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for bad, why in (("~nosuchuser-4c1d/photos", "cannot be looked up"), ("a\x00b", "NUL"),
                     (str(tmp_path / "loop"), "cannot be looked up")):
        with pytest.raises(ScanPathError, match=why):
            resolve_folder(bad)


def test_long_paths_are_cut_in_the_message():
    with pytest.raises(ScanPathError) as e:
        resolve_folder("~nosuchuser-4c1d/" + "x" * 5000)
    assert len(str(e.value)) < 400 and "chars)" in str(e.value)


def test_ordinary_paths_resolve(tmp_path):
    (tmp_path / "photos").mkdir()
    assert resolve_folder(tmp_path / "photos" / ".." / "photos") == (tmp_path / "photos").resolve()
    assert resolve_folder(tmp_path / "not-yet") == (tmp_path / "not-yet").resolve()  # need not exist
