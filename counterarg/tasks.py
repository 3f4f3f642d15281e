"""Candidate pools for the eight counterargument-retrieval tasks (Wachsmuth et al., ACL 2018).

A split's queries are the points that have a counter, i.e. ``split.pairs`` in order: query ``i`` is
``pairs[i].point`` and its true counter is ``pairs[i].counter``. The candidates of a split are laid
out as ``[counters; points]``: candidate ``j < Q`` is the counter of pair ``j`` and candidate
``Q + j`` is the point of pair ``j``. So the true counter of query ``i`` is candidate ``i`` and the
query's own point is candidate ``Q + i`` (never in a pool).

=====  ===========================================================================
task   pool of query ``i``
=====  ===========================================================================
sdoc   counters of the same debate and the same side folder (pro/con)
sdoa   counters of the same debate and side, plus points of the debate's other side
sdc    all counters of the debate
sda    all counters and all other points of the debate (not point ``i`` itself)
stc    all counters of the theme
sta    all counters and all other points of the theme
epc    all counters of the split
epa    all counters and all other points of the split
=====  ===========================================================================

Pools are built from true pairs only (unpaired records are neither queries nor candidates), and
the true counter is always in the pool. They are not stored as lists: :class:`Pools` keeps the
integer-coded debate, theme and side of every pair and builds boolean masks ``[B, 2Q]`` for a
block of query rows on demand, by vectorised comparisons, so that memory stays bounded for the
training split (4,065 queries) and the same code runs on CPU or GPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from .corpus import Split

TASKS = ("sdoc", "sdoa", "sdc", "sda", "stc", "sta", "epc", "epa")

TASK_DESCRIPTIONS = {
    "sdoc": "same debate, same side: counters",
    "sdoa": "same debate: same-side counters + other-side points",
    "sdc": "same debate: all counters",
    "sda": "same debate: all counters + other points",
    "stc": "same theme: all counters",
    "sta": "same theme: all counters + other points",
    "epc": "entire portal: all counters",
    "epa": "entire portal: all counters + other points",
}


class EvaluationError(ValueError):
    """Evaluation cannot run as asked (empty split or pool, mismatched shapes, unknown task)."""


def check_tasks(tasks) -> tuple[str, ...]:
    """Validate a task list and return it as a tuple; unknown names raise :class:`EvaluationError`."""
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise EvaluationError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    if not tasks:
        raise EvaluationError("no tasks to evaluate")
    return tasks


def _codes(values: list[str]) -> np.ndarray:
    """Integer codes (in order of first appearance) for a list of labels."""
    index: dict[str, int] = {}
    return np.array([index.setdefault(v, len(index)) for v in values], dtype=np.int64)


@dataclass
class Pools:
    """The candidate pools of one split for all eight tasks, kept as integer codes per pair.

    ``debate``, ``theme``, ``side`` are ``[Q]`` int arrays (the pair's point and counter share the
    folder, hence all three). :meth:`mask` gives the boolean pool masks for a block of queries.
    """

    split: str
    debate: np.ndarray  # [Q] int64
    theme: np.ndarray  # [Q] int64
    side: np.ndarray  # [Q] int64, 0 = pro, 1 = con
    _torch: dict = field(default_factory=dict, repr=False)
    _sizes: dict = field(default_factory=dict, repr=False)

    @property
    def num_queries(self) -> int:
        return int(self.debate.shape[0])

    @property
    def num_candidates(self) -> int:
        return 2 * self.num_queries

    # ------------------------------------------------------------------ masks
    def codes(self, task: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(query_code [Q], cand_code [2Q], drop_own_point)`` of ``task``.

        Candidate ``c`` is in the pool of query ``i`` iff ``cand_code[c] == query_code[i]`` (and,
        when ``drop_own_point``, ``c != Q + i``). Query codes are >= 0; -1 marks candidates that are
        in no pool of the task (points, for the counter-only tasks). One comparison per mask.
        """
        if task not in TASKS:
            raise EvaluationError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        none = np.full(self.num_queries, -1, dtype=np.int64)
        zero = np.zeros(self.num_queries, dtype=np.int64)
        ds = self.debate * 2 + self.side  # debate and side folder
        if task == "sdoc":
            return ds, np.concatenate([ds, none]), False
        if task == "sdoa":  # same-side counters + other-side points (own point is same-side)
            return ds, np.concatenate([ds, self.debate * 2 + (1 - self.side)]), False
        if task == "sdc":
            return self.debate, np.concatenate([self.debate, none]), False
        if task == "sda":
            return self.debate, np.concatenate([self.debate, self.debate]), True
        if task == "stc":
            return self.theme, np.concatenate([self.theme, none]), False
        if task == "sta":
            return self.theme, np.concatenate([self.theme, self.theme]), True
        if task == "epc":
            return zero, np.concatenate([zero, none]), False
        return zero, np.concatenate([zero, zero]), True  # epa

    def _codes_on(self, task: str, device) -> tuple[torch.Tensor, torch.Tensor, bool]:
        key = (task, str(torch.device(device)))
        if key not in self._torch:
            q, c, drop = self.codes(task)
            self._torch[key] = (torch.as_tensor(q, device=device), torch.as_tensor(c, device=device), drop)
        return self._torch[key]

    def mask(self, task: str, rows: slice | None = None, device="cpu") -> torch.Tensor:
        """Boolean pool mask ``[B, 2Q]`` of ``task`` for the query rows ``rows`` (default: all)."""
        q_code, c_code, drop = self._codes_on(task, device)
        rows = rows if rows is not None else slice(0, self.num_queries)
        m = c_code[None, :] == q_code[rows][:, None]  # [B, 2Q]
        if drop:
            qi = torch.arange(self.num_queries, device=device)[rows]  # [B]
            m[torch.arange(qi.shape[0], device=device), self.num_queries + qi] = False  # own point
        return m

    def _index_on(self, task: str, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        key = ("index", task, str(torch.device(device)))
        if key not in self._torch:
            q_code, c_code, drop = self.codes(task)
            order = np.argsort(c_code, kind="stable")  # [2Q]: candidates by (code, index)
            sorted_codes = c_code[order]
            start = np.searchsorted(sorted_codes, q_code, "left")  # [Q]
            count = np.searchsorted(sorted_codes, q_code, "right") - start  # [Q]
            self._torch[key] = tuple(torch.as_tensor(x, device=device) for x in (order, start, count)) + (drop,)
        return self._torch[key]

    def index(self, task: str, rows: slice | None = None, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Compact pools for a block of query rows: ``(ids [B, P], valid [B, P])``.

        Row ``b`` lists the pool's candidate ids in increasing order, padded to the block's largest
        pool ``P`` (``valid`` False on padding and on the query's own point). For the debate and
        theme tasks ``P`` is far below ``2Q``, so scoring works on ``[B, P]`` instead of ``[B, 2Q]``.
        """
        order, start, count, drop = self._index_on(task, device)
        rows = rows if rows is not None else slice(0, self.num_queries)
        st, ct = start[rows], count[rows]  # [B], [B]
        width = int(ct.max()) if ct.numel() else 0
        j = torch.arange(width, device=device)  # [P]
        valid = j[None, :] < ct[:, None]  # [B, P]
        ids = order[(st[:, None] + j[None, :]).clamp_max(order.shape[0] - 1)]  # [B, P]
        if drop:
            qi = torch.arange(self.num_queries, device=device)[rows]  # [B]
            valid &= ids != (self.num_queries + qi)[:, None]
        return ids, valid

    def members(self, task: str, query: int) -> np.ndarray:
        """Candidate ids in the pool of one query (for inspection and tests)."""
        m = self.mask(task, slice(query, query + 1))[0]
        return torch.nonzero(m).flatten().numpy()

    # ------------------------------------------------------------------ sizes
    def pool_sizes(self, task: str) -> np.ndarray:
        """``[Q]`` pool size of every query for ``task`` (computed from group counts, no masks)."""
        q = self.num_queries
        if task == "epc":
            return np.full(q, q)
        if task == "epa":
            return np.full(q, 2 * q - 1)
        if task in ("stc", "sta"):
            n = np.bincount(self.theme)[self.theme]
            return n if task == "stc" else 2 * n - 1
        n_debate = np.bincount(self.debate)[self.debate]
        if task in ("sdc", "sdoa"):  # sdoa: same-side counters + other-side points = debate size
            return n_debate
        if task == "sda":
            return 2 * n_debate - 1
        if task == "sdoc":
            ds = self.debate * 2 + self.side
            return np.bincount(ds)[ds]
        raise EvaluationError(f"unknown task {task!r}; known: {', '.join(TASKS)}")

    def sizes(self, tasks=TASKS) -> dict[str, float]:
        """Mean pool size per task (over queries)."""
        out = {}
        for t in check_tasks(tasks):
            if t not in self._sizes:
                self._sizes[t] = float(self.pool_sizes(t).mean()) if self.num_queries else 0.0
            out[t] = self._sizes[t]
        return out


def pools_from_labels(split: str, debates, sides, themes=None) -> Pools:
    """Pools from per-pair labels (debate key, side ``pro``/``con``, theme); ``themes`` defaults to
    the part of the debate key before ``/``. Used by :func:`build_pools` and synthetic benchmarks."""
    debates = list(debates)
    sides = list(sides)
    if themes is None:
        themes = [d.split("/", 1)[0] for d in debates]
    themes = list(themes)
    if not (len(debates) == len(sides) == len(themes)):
        raise EvaluationError(
            f"split {split!r}: label lists differ in length ({len(debates)} debates, {len(sides)} sides, "
            f"{len(themes)} themes)"
        )
    bad = sorted({s for s in sides if s not in ("pro", "con")})
    if bad:
        raise EvaluationError(f"split {split!r}: side must be pro or con, got {', '.join(map(repr, bad))}")
    # debates are keyed by theme too: a debate folder name is unique only within its theme
    deb = _codes([f"{t}\0{d}" for t, d in zip(themes, debates)])
    return Pools(split=split, debate=deb, theme=_codes(themes),
                 side=np.array([0 if s == "pro" else 1 for s in sides], dtype=np.int64))


def build_pools(split: "Split") -> Pools:
    """The eight tasks' pools for a corpus split (queries = ``split.pairs`` in order).

    Raises :class:`EvaluationError` when the split has no pairs.
    """
    if not split.pairs:
        raise EvaluationError(f"split {split.name!r} has no (point, counter) pairs to evaluate")
    pts = [p.point for p in split.pairs]
    return pools_from_labels(split.name, [r.debate_key for r in pts], [r.side for r in pts],
                             [r.theme for r in pts])
