"""Crash-safe folders (io.py): interrupted checkpoint swaps built on disk, manifests, folder locks."""

import json
import os

import pytest

from counterarg.io import (FolderLockedError, atomic_replace_dir, exclusive_lock, folder_lock, read_manifest,
                           recover_dir, remove_temp_files)


def _checkpoint(folder, epoch, *, sealed=True):
    """A checkpoint folder as atomic_replace_dir leaves it (sealed=False: a fill cut short)."""
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(f"state of epoch {epoch}".encode())
    if sealed:
        from counterarg.io import write_manifest

        write_manifest(folder, epoch=epoch)


def _epoch(folder):
    return read_manifest(folder)["epoch"]


def test_swap_writes_a_manifest_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "checkpoint"
    for epoch in (1, 2):
        atomic_replace_dir(target, lambda d, e=epoch: (d / "state.pt").write_text(f"epoch {e}"), epoch=epoch)
    assert _epoch(target) == 2 and (target / "state.pt").read_text() == "epoch 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_kill_between_the_two_renames_completes_the_swap(tmp_path):
    """Finding 2: only .checkpoint.old (epoch 7) and a complete .checkpoint.XXXX (epoch 8) remain."""
    _checkpoint(tmp_path / ".checkpoint.old", 7)
    _checkpoint(tmp_path / ".checkpoint.k2j4x9aa", 8)
    done = recover_dir(tmp_path / "checkpoint")
    assert _epoch(tmp_path / "checkpoint") == 8
    assert any("completed the swap" in d for d in done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_kill_during_the_fill_rolls_back_to_the_previous_checkpoint(tmp_path):
    _checkpoint(tmp_path / ".checkpoint.old", 7)
    _checkpoint(tmp_path / ".checkpoint.cut0short", 8, sealed=False)  # no manifest: the fill was cut
    done = recover_dir(tmp_path / "checkpoint")
    assert _epoch(tmp_path / "checkpoint") == 7 and any("rolled back" in d for d in done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_damaged_fill_folder_is_not_swapped_in(tmp_path):
    _checkpoint(tmp_path / ".checkpoint.old", 7)
    _checkpoint(tmp_path / ".checkpoint.flipped1", 8)
    (tmp_path / ".checkpoint.flipped1" / "state.pt").write_bytes(b"state of epoch 9")  # sha256 differs
    recover_dir(tmp_path / "checkpoint")
    assert _epoch(tmp_path / "checkpoint") == 7


def test_stray_fill_folders_and_temp_files_are_cleaned(tmp_path):
    """Another kill left a stray .checkpoint.XXXX beside an intact checkpoint (and a .tmp file)."""
    _checkpoint(tmp_path / "checkpoint", 3)
    _checkpoint(tmp_path / ".checkpoint.stray123", 4)
    _checkpoint(tmp_path / ".checkpoint.old", 2)
    (tmp_path / ".config.json.abc.tmp").write_text("{")
    done = recover_dir(tmp_path / "checkpoint") + remove_temp_files(tmp_path)
    assert _epoch(tmp_path / "checkpoint") == 3 and len(done) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_nothing_to_recover_is_a_no_op(tmp_path):
    assert recover_dir(tmp_path / "checkpoint") == []
    assert list(tmp_path.iterdir()) == []


def test_failed_fill_keeps_the_old_checkpoint(tmp_path):
    target = tmp_path / "checkpoint"
    atomic_replace_dir(target, lambda d: (d / "state.pt").write_text("good"), epoch=1)

    def boom(d):
        (d / "state.pt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_replace_dir(target, boom, epoch=2)
    assert (target / "state.pt").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_second_writer_gets_a_named_error_at_once(tmp_path):
    """Finding 4: the lock is exclusive and non-blocking; it is released when the holder ends."""
    with folder_lock(tmp_path, "run folder"):
        with pytest.raises(FolderLockedError, match=f"run folder {tmp_path} is in use.*pid {os.getpid()}"):
            with folder_lock(tmp_path, "run folder"):
                pass
    with folder_lock(tmp_path):  # free again
        pass


def test_lock_from_another_process(tmp_path):
    import subprocess
    import sys

    code = ("import sys, time; from counterarg.io import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(30)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "l")], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"held"
        with pytest.raises(FolderLockedError, match=f"pid {proc.pid}"):
            with exclusive_lock(tmp_path / "l", "x"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with exclusive_lock(tmp_path / "l", "x"):  # a killed holder leaves no stale lock
        pass


def test_manifest_lists_sha256_of_every_file(tmp_path):
    target = tmp_path / "c"
    atomic_replace_dir(target, lambda d: ((d / "a").write_text("1"), (d / "b").write_text("2")), epoch=5)
    m = json.loads((target / "manifest.json").read_text())
    assert set(m["files"]) == {"a", "b"} and m["epoch"] == 5 and all(len(h) == 64 for h in m["files"].values())


def test_a_lock_file_is_removed_by_its_holder_and_a_stale_name_is_refused(tmp_path, monkeypatch):
    """Issue 23, item 13: sweeps left ``results/.<name>.lock`` behind. The holder removes it as it
    finishes; a process that had opened the file just before that gets a named error, not a lock on
    a file no one else sees."""
    import fcntl

    from counterarg.io import remove_lock_file

    lock = tmp_path / ".x.lock"
    with exclusive_lock(lock, "sweep folder x"):
        remove_lock_file(lock)
    assert not lock.exists()
    with exclusive_lock(lock, "sweep folder x"):  # the next driver makes a fresh one
        assert lock.exists()
    real = fcntl.flock

    def flock_after_removal(fh, op):  # the holder removed the file between our open and our flock
        if op & fcntl.LOCK_EX:
            lock.unlink(missing_ok=True)
        return real(fh, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_removal)
    with pytest.raises(FolderLockedError, match="was just released by another process"):
        with exclusive_lock(lock, "sweep folder x"):
            pass
