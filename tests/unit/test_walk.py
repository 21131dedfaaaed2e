import os

import pytest

from producer.walk import WalkError, collect_files
from tests.conftest import tone, write


def test_walk_rules(tmp_path):
    root = tmp_path / "rec"
    write(root / "a.wav", tone(), 16000)
    write(root / "sub" / "b.FLAC", tone(), 16000, format="FLAC")
    write(root / ".hidden.wav", tone(), 16000)
    write(root / ".hiddendir" / "c.wav", tone(), 16000)
    (root / "notes.txt").write_text("x")
    (root / "folder.wav").mkdir()  # a folder named like audio is walked, not a file
    write(root / "folder.wav" / "d.wav", tone(), 16000)
    outside = tmp_path / "outside"
    write(outside / "e.wav", tone(), 16000)
    os.symlink(outside, root / "linkdir")  # symlinked folder: not descended
    os.symlink(outside / "e.wav", root / "link.wav")  # symlinked file: followed
    os.symlink(root / "loop.wav", root / "loop.wav")  # symlink loop: kept, fails later with a reason
    os.symlink(root, root / "sub" / "up")  # a cycle back to the root is not followed
    res = collect_files([str(root)])
    names = sorted(os.path.relpath(f, root) for f in res.files)
    assert names == ["a.wav", "folder.wav/d.wav", "link.wav", "loop.wav", "sub/b.FLAC"]
    assert res.ignored == 1 and res.hidden == 2
    assert all(os.path.isabs(f) for f in res.files)
    assert sorted(os.path.basename(d) for d in res.linked_dirs) == ["linkdir", "up"]


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(WalkError, match="path not found"):
        collect_files([str(tmp_path / "nope")])


def test_files_given_explicitly_and_duplicates(tmp_path):
    f = write(tmp_path / "x.wav", tone(), 16000)
    res = collect_files([str(f), str(tmp_path)])
    assert res.files == [str(f)]
