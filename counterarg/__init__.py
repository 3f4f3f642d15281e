"""counterarg: counterargument retrieval with a BERT bi-encoder, re-mined hard negatives and Ray Tune sweeps."""

__version__ = "0.2.0.dev0"
