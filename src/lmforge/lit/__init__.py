"""LightningModules, the Trainer factory, the fit loop pretrain and finetune share (``fit``)
and what the training stages read (``workspace``)."""
