"""Lost nodes and workers: which trial failures are retried, and the record of each restore.

* **Retried**: a trial whose node or worker process is lost (a spot node reclaimed, an OOM kill, a
  drained node: :func:`counterarg.ray_internals.is_system_failure`) is put back in Tune's queue and
  continues from its last epoch checkpoint on whatever node has room, by itself, up to
  ``--max-failures`` times per trial (``Sweep.max_failures``, default
  :data:`counterarg.sweep.DEFAULT_MAX_FAILURES`). An error of the training
  itself (NaN loss, a bad encoder path, a config error) would fail again: it ends the trial at once,
  recorded once, with its message (:func:`counterarg.ray_internals.retry_system_failures_only`).
* **Recorded**: each restore is appended to ``<trial folder>/restores.json`` in storage by the driver
  (:class:`RestoreLog`): when, after which epoch, on which node, and why. The summary reads it back
  (:func:`read_restores`) and names every restored trial and how often
  (:func:`counterarg.analysis.trials.restore_text`).
"""

from __future__ import annotations

import json
import time

from ray.tune import Callback

from ..ray_internals import is_system_failure, last_failure, trial_storage

#: one JSON list per trial folder: the trial's restores after a lost node or worker
RESTORES_FILE = "restores.json"
#: the result key that names the Ray node of a trial's epoch (reported by the trainable)
NODE_KEY = "node_id"


def failure_text(exc: BaseException | None) -> str:
    """``ActorDiedError: The actor died ...``: the exception's class and its first line (a
    ``RayTaskError``'s cause, when it wraps one)."""
    if exc is None:
        return "unknown failure"
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def read_restores(fs, trial_path: str) -> list[dict]:
    """The restores recorded for the trial folder ``trial_path`` on pyarrow filesystem ``fs``
    (``[]`` when none, or when the file cannot be read)."""
    if fs is None or not trial_path:
        return []
    try:
        with fs.open_input_stream(f"{str(trial_path).rstrip('/')}/{RESTORES_FILE}") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


class RestoreLog(Callback):
    """Driver-side: after Tune has put a trial back in its queue following a system failure, append
    the restore to the trial's :data:`RESTORES_FILE` in storage and say it on the console."""

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        exc = last_failure(trial)
        last = dict(trial.last_result or {})
        entry = {
            "time": time.time(),
            "after_epoch": last.get("epoch"),
            "node": last.get(NODE_KEY),
            "system_failure": is_system_failure(exc),
            "error": failure_text(exc),
        }
        fs, path = trial_storage(trial)
        restores = read_restores(fs, path) + [entry]
        try:
            fs.create_dir(path)
            with fs.open_output_stream(f"{path}/{RESTORES_FILE}") as f:
                f.write(json.dumps(restores, indent=1).encode("utf-8"))
        except OSError as e:  # storage hiccup: the console line below still says it
            print(f"[sweep] could not record the restore of trial {trial.trial_id} in {path}: {e}", flush=True)
        print(
            f"[sweep] trial {trial.trial_id} lost its node or worker after epoch {entry['after_epoch'] or 0} "
            f"({entry['error']}); it continues from its last checkpoint "
            f"(restore {len(restores)} of at most {trial.max_failures})",
            flush=True,
        )
