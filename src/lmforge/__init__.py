"""lmforge: collect, prepare, pretrain, finetune and evaluate Transformer language models."""

from lmforge.core import import_guard

__version__ = "0.1.0"

# torchmetrics (imported by Lightning) would load transformers whenever the [hf] extra is installed.
import_guard.install()
