"""Benchmarks behind ``counterarg bench``: the evaluator (eval), the neighbour-index backends (mining), the
kill-and-resume check (resume), training throughput and the GPU check (train). Beside sweep, below the CLI."""
