"""Candidate pools of one split for every registered task (tasks.py), as integer codes per pair.

A split's queries are the points that have a counter, i.e. ``split.pairs`` in order: query ``i`` is
``pairs[i].point`` and its true counter is ``pairs[i].counter``. The candidates of a split are laid
out as ``[counters; points]``: candidate ``j < Q`` is the counter of pair ``j`` and candidate
``Q + j`` is the point of pair ``j``. So the true counter of query ``i`` is candidate ``i`` and the
query's own point is candidate ``Q + i`` (never in a pool).

**Each distinct text once.** ArguAna files many debates under several themes, so a text can occur
several times in one split (in the distributed corpus, 218 of the 1,401 test, 183 of the 1,287
validation and 1,862 of the 4,065 training true counters have a verbatim copy elsewhere in their
split). Counting copies as different candidates would make a copy of the true counter tie with it
(a miss under the pessimistic tie rule, whatever the model) and put a copy of the query at distance
0. So, in every pool of every task: a candidate whose text equals the query's own text is not a
candidate (like the query's own point); a candidate whose text equals the true counter's text *is*
the hit (the first copy in the pool stands for all); any other text counts once (its first copy in
the pool). Candidates are given as integer text codes per candidate (:attr:`Pools.text`); without
texts every candidate is its own text. The pessimistic tie rule stays for different texts at
equal distance (see :mod:`counterarg.evaluation.evaluate`).

**The unseen view.** ``Pools.unseen`` marks the queries whose point text and true-counter text
both occur nowhere in the training split (any file of it: points and counters, paired or not).
Their candidates stay as they are; only the set of queries scored differs. On the distributed
test split that is 783 of 1,401 queries. Metrics of that view carry the split name
``{split}_unseen`` (e.g. ``test_unseen/sdoa/acc@1``). They are not stored as lists: :class:`Pools` keeps the
integer-coded debate, theme and side of every pair and builds boolean masks ``[B, 2Q]`` for a
block of query rows on demand, by vectorised comparisons, so that memory stays bounded for the
training split (4,065 queries) and the same code runs on CPU or GPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .tasks import REGISTRY, EvaluationError, check_tasks, task_names

if TYPE_CHECKING:  # pragma: no cover
    from ..data.corpus import Corpus, Split


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
    # [2Q] int64 text code of each candidate (counters, then points); None gives every candidate its own
    # text, filled in by __post_init__, so the field is an array wherever it is read
    text: np.ndarray = None  # type: ignore[assignment]
    unseen: np.ndarray | None = None  # [Q] bool: neither text of the query occurs in training
    queries: np.ndarray | None = None  # [32] uint8: which queries, in order (:func:`query_digest`); None if unknown
    _torch: dict = field(default_factory=dict, repr=False)
    _sizes: dict = field(default_factory=dict, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def num_queries(self) -> int:
        return int(self.debate.shape[0])

    @property
    def num_candidates(self) -> int:
        return 2 * self.num_queries

    def __post_init__(self) -> None:
        q = self.num_queries
        if self.text is None:  # every candidate its own text
            self.text = np.arange(2 * q, dtype=np.int64)
        self.text = np.asarray(self.text, dtype=np.int64)
        if self.text.shape != (2 * q,):
            raise EvaluationError(
                f"split {self.split!r}: text codes must have shape [{2 * q}], got {tuple(self.text.shape)}"
            )
        if self.unseen is not None:
            self.unseen = np.asarray(self.unseen, dtype=bool)
            if self.unseen.shape != (q,):
                raise EvaluationError(
                    f"split {self.split!r}: unseen mask must have shape [{q}], got {tuple(self.unseen.shape)}"
                )

    # ------------------------------------------------------------------ texts
    @property
    def query_text(self) -> np.ndarray:
        """``[Q]`` text code of each query (its point)."""
        return self.text[self.num_queries :]

    @property
    def true_text(self) -> np.ndarray:
        """``[Q]`` text code of each query's true counter."""
        return self.text[: self.num_queries]

    def representatives(self, task: str) -> np.ndarray:
        """``[2Q]`` bool: the candidate is the first (lowest id) of its text within its pool group.

        A pool of ``task`` is a group of candidates sharing a code (:meth:`codes`); within a group
        each distinct text is represented by its first copy, so a text counts once in every pool.
        """
        key = ("rep", task)
        if key not in self._memo:
            _, c_code, _ = self.codes(task)
            pair = c_code * (int(self.text.max()) + 1 if self.text.size else 1) + self.text  # [2Q]
            _, first = np.unique(pair, return_index=True)
            rep = np.zeros(self.num_candidates, dtype=bool)
            rep[first] = True
            rep &= c_code >= 0
            self._memo[key] = rep
        return self._memo[key]

    def peers(self) -> np.ndarray:
        """``[Q, m]`` candidate ids that share a text with query ``i``'s point or true counter.

        These are the candidates that are never *other* members of the query's pool: copies of the
        query (not candidates) and copies of the true counter (the hit itself). Row ``i`` always
        holds ``i`` and ``Q + i``, in increasing order, padded with its first entry (a repeat), ``m`` >= 2.
        """
        if "peers" not in self._memo:
            q = self.num_queries
            order = np.argsort(self.text, kind="stable")  # [2Q]
            st = self.text[order]
            rows = []
            for i in range(q):
                ids = set()
                for t in (self.text[i], self.text[q + i]):
                    a, b = np.searchsorted(st, t, "left"), np.searchsorted(st, t, "right")
                    ids.update(order[a:b].tolist())
                rows.append(sorted(ids))
            m = max([2] + [len(r) for r in rows])
            out = np.empty((q, m), dtype=np.int64)
            for i, r in enumerate(rows):
                out[i, : len(r)] = r
                out[i, len(r) :] = r[0]
            self._memo["peers"] = out
        return self._memo["peers"]

    def copy_counts(self) -> dict[str, int]:
        """How many queries the copy rule touches: a copy of the true counter elsewhere among the
        split's candidates, or a copy of the query's own text besides its own point."""
        q = self.num_queries
        counts = np.bincount(self.text, minlength=int(self.text.max()) + 1 if self.text.size else 0)
        qt, ct = self.query_text, self.true_text
        counter_copy = counts[ct] - 1 - (qt == ct) > 0 if q else np.zeros(0, bool)
        query_copy = counts[qt] - 1 - (qt == ct) > 0 if q else np.zeros(0, bool)
        return {
            "queries": q,
            "true_counter_copied": int(counter_copy.sum()),
            "query_copied": int(query_copy.sum()),
            "either": int((counter_copy | query_copy).sum()),
            "unseen": int(self.unseen.sum()) if self.unseen is not None else -1,
        }

    def describe(self) -> str:
        """One line on the copies and the unseen view, printed when a split is evaluated."""
        c = self.copy_counts()
        line = (
            f"{self.split}: {c['queries']} queries; {c['true_counter_copied']} have a verbatim copy of "
            f"their true counter and {c['query_copied']} a copy of their own point among the split's "
            f"candidates (each text counted once)"
        )
        if c["unseen"] >= 0:
            line += f"; {c['unseen']} unseen (neither text occurs in training)"
        return line

    # ------------------------------------------------------------------ masks
    def codes(self, task: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(query_code [Q], cand_code [2Q], drop_own_point)`` of ``task``.

        Candidate ``c`` is in the pool of query ``i`` iff ``cand_code[c] == query_code[i]`` (and,
        when ``drop_own_point``, ``c != Q + i``). Query codes are >= 0; -1 marks candidates that are
        in no pool of the task (points, for the counter-only tasks). One comparison per mask.
        """
        if task not in REGISTRY:
            raise EvaluationError(f"unknown task {task!r}; known: {', '.join(task_names())}")
        rule = REGISTRY[task]
        none = np.full(self.num_queries, -1, dtype=np.int64)
        group = {
            "debate_side": self.debate * 2 + self.side,
            "debate": self.debate,
            "theme": self.theme,
            "split": np.zeros(self.num_queries, dtype=np.int64),
        }[rule.scope]  # [Q]
        if rule.points is None:
            points = none
        elif rule.points == "other_side":  # the own point is same-side: never in the pool
            points = self.debate * 2 + (1 - self.side)
        else:
            points = group
        return group, np.concatenate([group, points]), rule.points == "group"

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
        rep, text = self._text_on(task, device)
        qi = torch.arange(self.num_queries, device=device)[rows]  # [B]
        qt, ct = text[self.num_queries + qi], text[qi]  # [B], [B]
        # each text once; copies of the query are no candidates; the true counter's text is its hit
        m &= rep[None, :] & ((text[None, :] != qt[:, None]) | (text[None, :] == ct[:, None]))
        if drop:
            m[torch.arange(qi.shape[0], device=device), self.num_queries + qi] = False  # own point
        return m

    def text_on(self, device) -> torch.Tensor:
        """``[2Q]`` candidate text codes on ``device`` (cached)."""
        key = ("text", str(torch.device(device)))
        if key not in self._torch:
            self._torch[key] = torch.as_tensor(self.text, device=device)
        return self._torch[key]

    def _text_on(self, task: str, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(representatives [2Q] bool, text [2Q] int64)`` of ``task`` on ``device``."""
        key = ("rep", task, str(torch.device(device)))
        if key not in self._torch:
            self._torch[key] = (torch.as_tensor(self.representatives(task), device=device), self.text_on(device))
        return self._torch[key]

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
        pool ``P`` (``valid`` False on padding, on the query's own point and its copies, and on all
        but the first copy of any other text). For the debate and
        theme tasks ``P`` is far below ``2Q``, so scoring works on ``[B, P]`` instead of ``[B, 2Q]``.
        """
        order, start, count, drop = self._index_on(task, device)
        rows = rows if rows is not None else slice(0, self.num_queries)
        st, ct = start[rows], count[rows]  # [B], [B]
        width = int(ct.max()) if ct.numel() else 0
        j = torch.arange(width, device=device)  # [P]
        valid = j[None, :] < ct[:, None]  # [B, P]
        ids = order[(st[:, None] + j[None, :]).clamp_max(order.shape[0] - 1)]  # [B, P]
        qi = torch.arange(self.num_queries, device=device)[rows]  # [B]
        if drop:
            valid &= ids != (self.num_queries + qi)[:, None]
        rep, text = self._text_on(task, device)
        t = text[ids]  # [B, P]
        qt, ct = text[self.num_queries + qi], text[qi]  # [B], [B]
        valid &= rep[ids] & ((t != qt[:, None]) | (t == ct[:, None]))
        return ids, valid

    def members(self, task: str, query: int) -> np.ndarray:
        """Candidate ids in the pool of one query (for inspection and tests)."""
        m = self.mask(task, slice(query, query + 1))[0]
        return torch.nonzero(m).flatten().numpy()

    # ------------------------------------------------------------------ sizes
    def pool_sizes(self, task: str) -> np.ndarray:
        """``[Q]`` pool size of every query for ``task``: distinct texts, the query's own excluded.

        Computed from group counts (no masks): the representatives in the query's group, minus the
        query's own text when it is represented there and is not also the true counter's text.
        """
        q_code, c_code, _ = self.codes(task)
        rep = self.representatives(task)
        n_rep = np.bincount(c_code[rep], minlength=int(max(q_code.max(initial=0), c_code.max(initial=0))) + 1)
        width = int(self.text.max()) + 1 if self.text.size else 1
        keys = np.sort(c_code[rep] * width + self.text[rep])  # represented (group, text) pairs
        own = q_code * width + self.query_text  # [Q]
        at = np.searchsorted(keys, own).clip(max=max(len(keys) - 1, 0))
        own_present = (keys[at] == own) if len(keys) else np.zeros(len(own), bool)
        return n_rep[q_code] - (own_present & (self.query_text != self.true_text))

    def sizes(self, tasks=None, unseen: bool = False) -> dict[str, float]:
        """Mean pool size per task, over all queries or (``unseen``) over the unseen queries."""
        keep = self.unseen if unseen and self.unseen is not None else np.ones(self.num_queries, bool)
        out = {}
        for t in check_tasks(tasks):
            key = (t, bool(unseen))
            if key not in self._sizes:
                self._sizes[key] = float(self.pool_sizes(t)[keep].mean()) if keep.any() else 0.0
            out[t] = self._sizes[key]
        return out


def query_digest(point_texts, counter_texts) -> np.ndarray:
    """``[32]`` uint8: sha256 of the queries' point and counter texts in order. Ranks kept with it say
    which queries they rank, so runs scored on other queries of the same count are told apart."""
    import hashlib

    h = hashlib.sha256()
    for point, counter in zip(point_texts, counter_texts):
        h.update(f"{len(point)}:{point}{len(counter)}:{counter}".encode())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


def pools_from_labels(
    split: str, debates, sides, themes=None, point_texts=None, counter_texts=None, unseen=None, queries=None
) -> Pools:
    """Pools from per-pair labels (debate key, side ``pro``/``con``, theme); ``themes`` defaults to
    the part of the debate key before ``/``. ``point_texts``/``counter_texts`` (any hashable per
    pair, e.g. the texts) decide which candidates are copies; without them all texts differ.
    ``unseen`` is the optional ``[Q]`` mask of the unseen view. Used by :func:`build_pools` and
    synthetic benchmarks."""
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
    text = None
    if point_texts is not None or counter_texts is not None:
        if point_texts is None or counter_texts is None:
            raise EvaluationError(f"split {split!r}: give both point_texts and counter_texts, or neither")
        point_texts, counter_texts = list(point_texts), list(counter_texts)
        if not (len(point_texts) == len(counter_texts) == len(debates)):
            raise EvaluationError(
                f"split {split!r}: {len(point_texts)} point texts and {len(counter_texts)} "
                f"counter texts for {len(debates)} pairs"
            )
        text = _codes(counter_texts + point_texts)  # candidate order: counters, then points
    return Pools(
        split=split,
        debate=deb,
        theme=_codes(themes),
        side=np.array([0 if s == "pro" else 1 for s in sides], dtype=np.int64),
        text=text if text is not None else np.arange(2 * len(debates), dtype=np.int64),
        unseen=unseen,
        queries=queries,
    )


def seen_texts(training: Split | None) -> set[str] | None:
    """Every text of the training split (points and counters, paired or not); None without one."""
    return None if training is None else {r.text for r in training.records}


def build_pools(split: Split, seen: set[str] | None = None) -> Pools:
    """The eight tasks' pools for a corpus split (queries = ``split.pairs`` in order).

    Candidates are coded by their text (the copy rule above). With ``seen`` (the training split's
    texts, :func:`seen_texts`) and a split other than training, ``unseen`` marks the queries whose
    point and counter texts are both absent from it. Raises :class:`EvaluationError` when the split
    has no pairs.
    """
    if not split.pairs:
        raise EvaluationError(f"split {split.name!r} has no (point, counter) pairs to evaluate")
    pts = [p.point for p in split.pairs]
    unseen = None
    if seen is not None and split.name != "training":
        unseen = np.array([p.point.text not in seen and p.counter.text not in seen for p in split.pairs])
    points, counters = [p.point.text for p in split.pairs], [p.counter.text for p in split.pairs]
    return pools_from_labels(
        split.name,
        [r.debate_key for r in pts],
        [r.side for r in pts],
        [r.theme for r in pts],
        points,
        counters,
        unseen=unseen,
        queries=query_digest(points, counters),
    )


def split_pools(corpus: Corpus, split: str) -> Pools:
    """The pools of ``corpus``'s split ``split`` with its unseen view (training's texts as ``seen``);
    a corpus without that split raises corpus.CorpusError naming the splits it has."""
    return build_pools(corpus.split(split), seen_texts(corpus.splits.get("training")))
