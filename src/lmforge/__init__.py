"""lmforge: collect, prepare, pretrain, finetune and evaluate Transformer language models."""

__version__ = "0.1.0"
