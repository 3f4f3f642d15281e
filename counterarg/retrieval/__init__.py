"""Finding and ranking candidates, below config: neighbour indexes (neighbours, index, shards: the
only module here that imports Ray, lazily), the task registry and each split's candidate pools (tasks, pools),
the distances every ranking shares (distances), a split's pools ranked at once (pool_ranks), the
eval_mode registry (scorers) and the metrics from per-query ranks (metrics). Config validates through
BACKENDS, SCORERS and the task names, so nothing here imports config."""
