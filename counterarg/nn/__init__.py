"""The torch building blocks, none of which knows Config: encoder loading, pooling and embedding passes
(encoder), the similarity head and pair classifier (heads) with their starts (head_starts), mixed
precision (precision), the loss registry (loss), a tiny random BERT for tests and smoke runs (testing).
Config validates through the registries here (HEAD_STARTS, LOSSES, PRECISIONS), so this package sits
below config and never imports it."""
