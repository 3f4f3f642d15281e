"""The ArguAna view of a model (retrieval/arguana.py): the relevant document's rank for every query at once.

Every query is ranked against the whole collection (all distinct texts of the corpus) in blocks of
rows, by the same distance the eight tasks use (``eval_metric`` in the similarity space; cosine on
the pooled output for the zero-shot baseline). The query's own text is excluded; ties count against
the relevant document (it goes after every document at its distance), as in the tasks. A scorer
that needs the classifier (``rerank``, ``fused``) reorders the top ``rerank_k`` exactly as it does
in the tasks, by the same code (retrieval/pool_ranks.py's ``nearest`` and ``Top.reranked``), so the
view ranks the way the model ranks.

Cost: one embedding of every text of the corpus (8,550 on the distributed corpus), then a ``[B, N]``
distance block per block of query rows. The training loop and ``counterarg evaluate`` embed the
collection once and read the eight tasks' pair embeddings off it (:func:`pair_embeddings`), so
what the view adds is the texts of the splits not evaluated (training's, mostly) and the distances.
"""

from __future__ import annotations

import numpy as np
import torch

from ..retrieval.arguana import NO_RELEVANT, ArguAnaView, view_metrics
from ..retrieval.distances import prepare, row_distances, work_dtype
from ..retrieval.pool_ranks import nearest, pair_values
from ..retrieval.scorers import check_options

#: elements of one [B, N] distance block (bounds memory as pool_ranks.BLOCK_ELEMENTS does)
BLOCK_ELEMENTS = 1 << 22

__all__ = ["view_ranks", "model_view_metrics", "zero_shot_view_metrics", "collection_embeddings", "pair_embeddings"]


def view_ranks(
    view: ArguAnaView,
    sim,
    h=None,
    classify=None,
    *,
    mode: str = "retrieval",
    metric: str = "cosine",
    rerank_k: int = 10,
    fused_w: float = 0.0,
) -> torch.Tensor:
    """``[Q]`` float64: the 1-based rank of each query's relevant document among the collection less
    the query's own text; ``inf`` for a query without one. ``sim`` ``[N, d]`` embeds the collection
    (``view.docs`` in order), ``h`` ``[N, H]`` too when ``mode``'s scorer needs ``classify``."""
    scorer = check_options(mode, metric, rerank_k)
    s = torch.as_tensor(sim)
    n = int(view.docs.shape[0])
    if s.ndim != 2 or s.shape[0] != n:
        raise ValueError(f"{view.split}: collection embeddings have shape {tuple(s.shape)}, expected [{n}, d]")
    device = s.device
    ranks = torch.full((view.num_queries,), NO_RELEVANT, dtype=torch.float64, device=device)
    rows = np.flatnonzero(view.answerable & (view.query >= 0))  # a query outside the collection has no embedding
    if rows.size == 0:
        return ranks.cpu()
    cand = prepare(s, metric, work_dtype(device))  # [N, d]
    cand_sq = (cand * cand).sum(1) if metric == "l2" else None  # [N]
    q_all = torch.as_tensor(view.query[rows], device=device)  # [R]
    rel_all = torch.as_tensor(view.relevant[rows], device=device)  # [R]
    rerank = scorer.needs_classifier and rerank_k > 1
    if scorer.needs_classifier and (classify is None or h is None):
        raise ValueError(f"mode {mode!r} needs the pooled outputs h and a classify function")
    out = torch.empty(rows.size, dtype=torch.float64, device=device)
    block = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, rows.size, block):
        sl = slice(start, min(rows.size, start + block))
        qi, rel = q_all[sl], rel_all[sl]  # [B], [B]
        b = torch.arange(qi.shape[0], device=device)
        dist = row_distances(cand[qi], cand, cand_sq, metric)  # [B, N]
        dist[b, qi] = float("inf")  # the query's own text is no result
        d_true = dist[b, rel]  # [B]
        r = (dist <= d_true[:, None]).sum(1)  # [B]; the relevant document and its ties
        out[sl] = r.double()
        if not rerank:
            continue
        need = torch.nonzero(r <= rerank_k).flatten()  # [m]: the rows the classifier can reorder
        if need.numel() == 0:
            continue
        dm = dist[need].clone()  # [m, N]
        dm[torch.arange(need.numel(), device=device), rel[need]] = float("inf")  # the relevant one is no rival
        top = nearest(dm, None, min(rerank_k - 1, n), qi[need], rel[need], d_true[need])  # the tasks' rule
        keys = torch.unique(top.keys(n))  # sorted
        vals = pair_values(classify, scorer, keys, n, s, s, h, h)  # [M]
        out[sl][need] = top.reranked(keys, vals, n, scorer, fused_w).double()
    ranks[torch.as_tensor(rows, device=device)] = out
    return ranks.cpu()


def collection_embeddings(model) -> dict[str, torch.Tensor]:
    """``{"h": [N, H], "s": [N, d]}`` of every text of ``model``'s table (the collection), in eval mode."""
    if model.features is None or model.table is None:
        raise ValueError("the ArguAna view needs a model built over a corpus (its texts by id)")
    ids = np.arange(len(model.table.texts), dtype=np.int64)
    with torch.no_grad():
        h = model.features.embed(ids)
        return {"h": h, "s": model.heads.similarity(h)}


def pair_embeddings(model, split: str, collection: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model.embed_pairs(split)`` read off the collection's embeddings (every pair's texts are in
    it), so an evaluation that scores the view embeds each text once."""
    ids = model.table.splits[split]
    p, c = (torch.as_tensor(x, device=collection["h"].device) for x in (ids.point, ids.counter))
    return {"h_p": collection["h"][p], "h_c": collection["h"][c], "s_p": collection["s"][p], "s_c": collection["s"][c]}


def model_view_metrics(
    model, view: ArguAnaView, emb: dict | None = None, *, fused_w: float | None = None, return_ranks: bool = False
):
    """The view's metrics for ``model`` scored as its config says (eval_mode, eval_metric, rerank_k,
    its weight); ``emb`` from :func:`collection_embeddings` when already computed this epoch."""
    c = model.config
    emb = emb if emb is not None else collection_embeddings(model)
    with torch.no_grad():
        r = view_ranks(
            view,
            emb["s"],
            emb["h"],
            model.heads.classify,
            mode=c.eval_mode,
            metric=c.eval_metric,
            rerank_k=c.rerank_k,
            fused_w=model.scoring_weight() if fused_w is None else fused_w,
        )
    m = view_metrics(view.split, view, r)
    return (m, r) if return_ranks else m


def zero_shot_view_metrics(model, view: ArguAnaView, emb: dict | None = None) -> dict[str, float]:
    """The untrained encoder's view: pooled output ``h``, cosine (MTEB's setting for this encoder)."""
    emb = emb if emb is not None else collection_embeddings(model)
    with torch.no_grad():
        return view_metrics(view.split, view, view_ranks(view, emb["h"], mode="retrieval", metric="cosine"))
