"""Plain PyTorch models (no Lightning, MLflow or Hydra): the encoder, heads, the prefix-LM
decoder and its decoding."""
