"""Crash-safe folders (io.py): interrupted checkpoint swaps built on disk, manifests, folder locks."""

import json
import os

import pytest

from counterarg.core.io import (
    FolderLockedError,
    atomic_replace_dir,
    exclusive_lock,
    folder_lock,
    read_manifest,
    recover_dir,
    remove_temp_files,
)


def _checkpoint(folder, epoch, *, sealed=True):
    """A checkpoint folder as atomic_replace_dir leaves it (sealed=False: a fill cut short)."""
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(f"state of epoch {epoch}".encode())
    if sealed:
        from counterarg.core.io import write_manifest

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
    """Only .checkpoint.old (epoch 7) and a complete .checkpoint.XXXX (epoch 8) remain."""
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
    """The lock is exclusive and non-blocking; it is released when the holder ends."""
    with folder_lock(tmp_path, "run folder"):
        with pytest.raises(FolderLockedError, match=f"run folder {tmp_path} is in use.*pid {os.getpid()}"):
            with folder_lock(tmp_path, "run folder"):
                pass
    with folder_lock(tmp_path):  # free again
        pass


def test_lock_from_another_process(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, time; from counterarg.core.io import exclusive_lock\n"
        "with exclusive_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(30)\n"
    )
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


def _swap_killed_at(target, n, epoch):
    """Run one swap of ``target`` to ``epoch`` in a forked child that SIGKILLs itself at its n-th
    rename (io._rename: the manifest's, target -> .old, fill -> target); True if the kill hit."""
    import signal

    from counterarg.core import io

    pid = os.fork()
    if pid == 0:  # the child: file operations only, then a real SIGKILL (no cleanup runs)
        calls = []

        def rename(a, b):
            calls.append(b)
            if len(calls) == n:
                os.kill(os.getpid(), signal.SIGKILL)
            os.replace(a, b)

        io._rename = rename
        try:
            atomic_replace_dir(target, lambda d: (d / "state.pt").write_text(f"epoch {epoch}"), epoch=epoch)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("existed", [True, False])
def test_a_kill_at_every_rename_of_the_swap_leaves_the_old_or_the_new_folder(tmp_path, existed):
    """One crash-safe swap: a SIGKILL at each rename of a swap, then recovery, gives the
    previous folder or the new one, whole (content matches its manifest's epoch), and nothing else;
    a swap started after the kill recovers on its own and leaves no leftover."""
    outcomes = []
    n = 1
    while True:
        case = tmp_path / f"kill{n}"
        target = case / "checkpoint"
        case.mkdir()
        if existed:
            atomic_replace_dir(target, lambda d: (d / "state.pt").write_text("epoch 1"), epoch=1)
        killed = _swap_killed_at(target, n, 2)
        recover_dir(target)
        epoch = _epoch(target) if target.exists() else None
        if epoch is not None:
            assert (target / "state.pt").read_text() == f"epoch {epoch}"
        assert sorted(p.name for p in case.iterdir()) == (["checkpoint"] if epoch else [])
        outcomes.append((killed, epoch))
        atomic_replace_dir(target, lambda d: (d / "state.pt").write_text("epoch 3"), epoch=3)
        assert _epoch(target) == 3 and sorted(p.name for p in case.iterdir()) == ["checkpoint"]
        if not killed:
            break
        n += 1
    if existed:  # renames: manifest, checkpoint -> .checkpoint.old, fill -> checkpoint
        assert outcomes == [(True, 1), (True, 1), (True, 2), (False, 2)]
    else:  # renames: manifest, fill -> checkpoint
        assert outcomes == [(True, None), (True, 2), (False, 2)]


def test_a_swap_after_an_unrecovered_kill_keeps_the_only_copy(tmp_path):
    """The state a kill between the renames leaves (only .checkpoint.old and a sealed fill folder):
    the next swap completes or rolls back first, never deletes .checkpoint.old as a stale copy."""
    _checkpoint(tmp_path / ".checkpoint.old", 7)
    _checkpoint(tmp_path / ".checkpoint.cut0short", 8, sealed=False)
    boom = OSError("fill failed")

    def fill(d):
        raise boom

    with pytest.raises(OSError):
        atomic_replace_dir(tmp_path / "checkpoint", fill, epoch=8)
    assert _epoch(tmp_path / "checkpoint") == 7  # rolled back first, so the failed fill lost nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_untouched(tmp_path):
    """A symlinked or hard-linked OUT/.lock is never opened through."""
    from counterarg.core.io import LockFileError

    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name, link in (("soft", os.symlink), ("hard", os.link)):
        run = tmp_path / name
        run.mkdir()
        link(victim, run / ".lock")
        with pytest.raises(LockFileError, match=f"lock file {run / '.lock'} is a (symbolic|hard) link"):
            with folder_lock(run):
                pass
    assert victim.read_text() == "precious"
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    os.symlink(tmp_path / "not-yet", dangling / ".lock")
    with pytest.raises(LockFileError):
        with folder_lock(dangling):
            pass
    assert not (tmp_path / "not-yet").exists()  # not created through the link


def test_a_full_disk_is_named_with_what_was_kept(tmp_path, monkeypatch):
    """ENOSPC at any write of a swap, a file write or a row append is a
    DiskFullError naming the file and what was kept, and the previous content stays."""
    import errno

    from counterarg.core import io
    from counterarg.core.io import DiskFullError, append_jsonl, atomic_write_text

    target = tmp_path / "checkpoint"
    atomic_replace_dir(target, lambda d: (d / "state.pt").write_text("epoch 1"), epoch=1)
    atomic_write_text(tmp_path / "config.json", "{}")
    append_jsonl(tmp_path / "m.jsonl", {"epoch": 1})

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "_fsync_file", full)
    with pytest.raises(
        DiskFullError,
        match=rf"disk full: could not write {target} .*kept the previous {target} "
        r"\(epoch 1\) as it was",
    ):
        atomic_replace_dir(target, lambda d: (d / "state.pt").write_text("epoch 2"), epoch=2)
    with pytest.raises(DiskFullError, match="kept the previous .*config.json as it was"):
        atomic_write_text(tmp_path / "config.json", '{"a": 1}')
    with pytest.raises(DiskFullError, match="kept the rows already in"):
        append_jsonl(tmp_path / "m.jsonl", {"epoch": 2})
    monkeypatch.undo()
    assert _epoch(target) == 1 and (target / "state.pt").read_text() == "epoch 1"
    assert (tmp_path / "config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "config.json", "m.jsonl"]


def test_a_library_write_error_on_an_almost_full_disk_is_a_full_disk(tmp_path, monkeypatch):
    """torch ("file write failed") and safetensors hide the errno: with under FULL_BELOW bytes
    free such an error is named as a full disk; with space left it stays what it was."""
    from counterarg.core import io
    from counterarg.core.io import DiskFullError

    def torch_like(d):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
            "data/0: file write failed"
        )

    def not_a_write(d):
        raise RuntimeError("metric validation/mean/acc@1 is nan at epoch 3")

    with pytest.raises(RuntimeError, match="file write failed"):
        atomic_replace_dir(tmp_path / "c", torch_like)
    monkeypatch.setattr(io, "free_bytes", lambda path: 4096)
    with pytest.raises(DiskFullError, match=r"0\.0 MiB left.*kept nothing new"):
        atomic_replace_dir(tmp_path / "c", torch_like)
    with pytest.raises(RuntimeError, match="is nan"):  # not a write: stays what it was
        atomic_replace_dir(tmp_path / "c", not_a_write)
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_is_removed_by_its_holder_and_a_stale_name_is_refused(tmp_path, monkeypatch):
    """Sweeps left ``results/.<name>.lock`` behind. The holder removes it as it
    finishes; a process that had opened the file just before that gets a named error, not a lock on
    a file no one else sees."""
    import fcntl

    from counterarg.core.io import remove_lock_file

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
