"""A trained model outside training: rank's candidate sources and the ranking of one argument (candidates),
its cached candidates and embed's output (inference) and the sentence-transformers export (export). Above
evaluation (the model card names the best epoch); imports nothing of training."""
