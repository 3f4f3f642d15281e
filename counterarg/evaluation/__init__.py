"""Judging a model: the eight tasks' per-query ranks under a scorer and the zero-shot baseline
(evaluate), and which epoch of a run is its best (selection). Above model; imports nothing of training."""
