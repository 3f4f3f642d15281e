"""The ArguAna-like view: BEIR's retrieval task rebuilt from this corpus, scored the way MTEB scores ArguAna.

BEIR (Thakur et al., 2021) made one retrieval task of the ArguAna Counterargs corpus, and MTEB's
``ArguAna`` task evaluates it; its published scores are what embedding models are compared on:

* **queries**: the test split's point files (1,406; a query id is the file's path, e.g.
  ``test-environment-aeghhgwpe-pro02a``);
* **collection**: the arguments of all three splits, points and counters (8,674 documents). Test
  documents carry the debate's folder name as their title, which MTEB's sentence-transformers
  encoder puts before the text; training and validation documents have none;
* **relevant**: one document per query, the point's own counter (``...pro02b``, gain 1); the five
  test points without a counter file keep a judgement whose document is not in the collection, so
  they score 0 (beir-cellar/beir#101 reports one of them);
* **excluded**: the query's own document (MTEB's ``ignore_identical_ids`` drops a result whose id
  equals the query's id);
* **measures** (pytrec_eval over the top 1,000): nDCG@10 (MTEB's main score), nDCG@1, MRR@10, Recall@100.

**Rebuilt here** from the texts we have, with the project's copy rule (each distinct text once,
pools.py): the collection is every distinct text of the corpus's true pairs (8,550 on the
distributed corpus; the 17 texts found only in unpaired files are left out, the five unanswerable
test queries among them), the queries are the split's point files (pairs in order, then the points
without a counter, which score 0 as in BEIR), the relevant document is the counter's text, and the
query's own text is excluded wherever it is filed. No titles are added. BEIR's 8,674 documents are
not each text once (the corpus has 8,567 distinct texts, and MTEB's published MRR@1 and nDCG@1 differ
only where documents tie exactly), so a copy of a query's text under another id stays in its results
there; which copies BEIR kept cannot be read off the corpus. Hence "ArguAna-like": docs/evaluation.md.

With one relevant document of gain 1 at rank ``r`` the measures are closed forms of ``r``:
nDCG@k = 1/log2(r + 1) for r <= k, MRR@k = 1/r for r <= k, Recall@k = [r <= k] (0 past k and for a
query without a relevant document); tests/retrieval/test_arguana.py checks them against pytrec_eval.
Metric keys are flat like the tasks': ``{split}/arguana/ndcg@10``, and ``{split}_unseen/arguana/...``
over the queries none of whose texts occurs in training (the unseen view of pools.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .metrics import metric_key, unseen_split
from .pools import seen_texts
from .tasks import EvaluationError

if TYPE_CHECKING:  # pragma: no cover
    from ..data.corpus import Corpus, TextTable

#: the view's name in metric keys (where a task's name stands): ``test/arguana/ndcg@10``
VIEW = "arguana"
#: what the published scores it is compared with are called
TITLE = "ArguAna-like view (BEIR's task rebuilt from this corpus, each text once; MTEB's measures)"
#: the rank given to a query without a relevant document (it scores 0 in every measure)
NO_RELEVANT = math.inf


def _ndcg(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda r: torch.where(r <= k, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r))


def _mrr(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda r: torch.where(r <= k, 1.0 / r, torch.zeros_like(r))


def _recall(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda r: (r <= k).double()


#: The view's measures, MTEB's main score first: name -> per-query value from the relevant
#: document's rank ``[Q]`` (float64, ``inf`` where there is none). Everything that lists them reads this.
MEASURES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ndcg@10": _ndcg(10),
    "ndcg@1": _ndcg(1),
    "mrr@10": _mrr(10),
    "recall@100": _recall(100),
}
MAIN = next(iter(MEASURES))


@dataclass
class ArguAnaView:
    """The view for one split: which texts are queries, which one is relevant, which are excluded.

    ``query`` and ``relevant`` index the collection (:attr:`docs`, text ids of a
    data.corpus.TextTable); ``-1`` where a query's own text is not in the collection or it has no
    relevant document. Queries are the split's pairs in order, then its points without a counter.
    """

    split: str
    docs: np.ndarray  # [N] text ids of the collection (TextTable ids)
    query: np.ndarray  # [Q] collection index of each query's own text, -1 when not in it
    relevant: np.ndarray  # [Q] collection index of its counter's text, -1 when it has no counter
    unseen: np.ndarray | None  # [Q] bool: none of the query's texts occurs in training
    corpus_texts: int  # distinct texts in the whole corpus (unpaired files included)

    @property
    def num_queries(self) -> int:
        return int(self.query.shape[0])

    @property
    def answerable(self) -> np.ndarray:
        """``[Q]`` bool: the query has a relevant document (a counter)."""
        return self.relevant >= 0

    def describe(self) -> str:
        """One line on what the view holds (printed by ``counterarg evaluate``)."""
        q, n = self.num_queries, int(self.docs.shape[0])
        line = (
            f"{VIEW} view ({self.split}): {q} queries (its point files; {q - int(self.answerable.sum())} "
            f"without a counter score 0) over {n} distinct texts of all splits, the query's own text "
            f"excluded; the corpus holds {self.corpus_texts} distinct texts ({self.corpus_texts - n} only in "
            "files without a partner)"
        )
        if self.unseen is not None:
            line += f"; {int(self.unseen.sum())} unseen"
        return line


def build_view(corpus: Corpus, table: TextTable, split: str) -> ArguAnaView:
    """The view of ``corpus``'s split ``split`` over ``table``'s texts (the collection: every text of
    the table, i.e. of the loaded splits' pairs). Raises corpus.CorpusError for a missing split and
    :class:`EvaluationError` when the split has no point files."""
    sp = corpus.split(split)
    index = {t: i for i, t in enumerate(table.texts)}
    points = [p.point for p in sp.pairs] + [r for r in sp.unpaired if r.kind == "point"]
    if not points:
        raise EvaluationError(f"split {split!r} has no point files to use as {VIEW} queries")
    counters = [p.counter.text for p in sp.pairs] + [None] * (len(points) - len(sp.pairs))
    query = np.array([index.get(r.text, -1) for r in points], dtype=np.int64)
    relevant = np.array([index[c] if c is not None else -1 for c in counters], dtype=np.int64)
    seen = seen_texts(corpus.splits.get("training"))
    unseen = None
    if seen is not None and split != "training":
        unseen = np.array([r.text not in seen and (c is None or c not in seen) for r, c in zip(points, counters)])
    every = {r.text for s in corpus.splits.values() for r in s.records}
    return ArguAnaView(split, np.arange(len(table.texts), dtype=np.int64), query, relevant, unseen, len(every))


def view_metrics(split: str, view: ArguAnaView, ranks) -> dict[str, float]:
    """The measures as flat keys for all queries (``{split}/arguana/...``) and, where the view has an
    unseen mask with a query in it, the unseen ones (``{split}_unseen/arguana/...``). ``ranks`` ``[Q]``:
    the relevant document's 1-based rank, ``inf`` where there is none."""
    r = torch.as_tensor(ranks, dtype=torch.float64).cpu()
    if r.shape != (view.num_queries,):
        raise EvaluationError(
            f"split {split!r}: {VIEW} ranks have shape {tuple(r.shape)}, the view has {view.num_queries} queries"
        )
    out = {metric_key(split, VIEW, m): float(f(r).mean()) for m, f in MEASURES.items()}
    if view.unseen is not None and view.unseen.any():
        keep = torch.as_tensor(view.unseen)
        out.update({metric_key(unseen_split(split), VIEW, m): float(f(r[keep]).mean()) for m, f in MEASURES.items()})
    return out


def format_view(metrics: dict[str, float], split: str, view: ArguAnaView | None = None) -> str:
    """A text table of the view: one row per query set (all, unseen), the measures in per cent."""
    rows = [(split, view.num_queries if view is not None else None)]
    if view is not None and view.unseen is not None:
        rows.append((unseen_split(split), int(view.unseen.sum())))
    rows = [(s, n) for s, n in rows if metric_key(s, VIEW, MAIN) in metrics]
    if not rows:
        raise EvaluationError(f"no {VIEW} metrics for split {split!r} (keys look like '{split}/{VIEW}/{MAIN}')")
    w = max(len(s) for s, _ in rows) + 2
    head = f"{VIEW:<{w}}" + "".join(f"{m:>12}" for m in MEASURES) + f"{'queries':>9}"
    lines = [head, "-" * len(head)]
    for s, n in rows:
        lines.append(
            f"{s:<{w}}"
            + "".join(f"{100 * metrics[metric_key(s, VIEW, m)]:>12.2f}" for m in MEASURES)
            + (f"{n:>9}" if n is not None else "")
        )
    return "\n".join(lines)
