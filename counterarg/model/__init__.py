"""The trained model, above config: the checkpoint format (checkpoint), the feature modes (features) and
BiEncoder, the one home of a trained model (biencoder). Training and every command that uses a model sit above;
nothing here imports training."""
