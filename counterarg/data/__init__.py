"""Texts in: the ArguAna corpus reader and its unique-text table (corpus), the generated demo corpus
(demo), the files a user names on the command line (inputs), the on-disk feature cache (feature_cache).
Above core; knows nothing of models or Config."""
