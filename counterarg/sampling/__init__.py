"""What one training epoch draws, pure and seeded, below config: the random-rate schedules registry
(schedules), hard-negative mining (mining), the epoch's batch order (batches)."""
