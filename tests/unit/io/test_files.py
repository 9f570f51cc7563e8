"""`replace_dir`: the target always names a whole directory, and no hidden leftovers survive a replacement."""

from __future__ import annotations

from pathlib import Path

import pytest

from secateurs.io import files
from secateurs.io.files import exchange_paths, replace_dir


def make(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "run.json").write_text(text)
    return path


def test_exchange_swaps_two_directories(tmp_path: Path) -> None:
    first, second = make(tmp_path / "a", "A"), make(tmp_path / "b", "B")
    swapped = exchange_paths(first, second)  # False only where the file system cannot: then nothing moved
    expected = ("B", "A") if swapped else ("A", "B")
    assert ((first / "run.json").read_text(), (second / "run.json").read_text()) == expected


def test_exchange_of_a_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        exchange_paths(make(tmp_path / "a", "A"), tmp_path / "missing")


@pytest.mark.parametrize("atomic", [True, False], ids=["exchange", "two-renames"])
def test_replace_dir_replaces_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atomic: bool
) -> None:
    if not atomic:
        monkeypatch.setattr(files, "exchange_paths", lambda first, second: False)
    target = make(tmp_path / "run", "old")
    replace_dir(make(tmp_path / ".run.partial", "new"), target)
    assert (target / "run.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    replace_dir(make(tmp_path / ".fresh.partial", "first"), tmp_path / "fresh")  # no old target
    assert (tmp_path / "fresh" / "run.json").read_text() == "first"


def test_a_kill_between_the_two_renames_is_cleaned_up_next_time(tmp_path: Path) -> None:
    # What the fallback leaves when killed after renaming the old target aside: no target, the trash.
    make(tmp_path / ".run.old-12345", "old")
    make(tmp_path / ".run.old-99", "older")
    make(tmp_path / ".runner.old-1", "another run's")  # a different name: not ours to remove
    replace_dir(make(tmp_path / ".run.partial", "new"), tmp_path / "run")
    assert (tmp_path / "run" / "run.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".runner.old-1", "run"]


def test_exclusive_lock_makes_a_second_holder_wait(tmp_path):
    import threading

    from secateurs.io.files import exclusive_lock

    lock = tmp_path / "cache" / "key.lock"
    order: list[str] = []
    first_holds, second_tried = threading.Event(), threading.Event()

    def second() -> None:
        first_holds.wait()
        second_tried.set()
        with exclusive_lock(lock):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with exclusive_lock(lock):
        first_holds.set()
        second_tried.wait()
        thread.join(timeout=0.2)  # cannot enter while the first holds the lock
        order.append("first")
    thread.join()
    assert order == ["first", "second"]
    assert lock.is_file()
