"""lmforge: collect, prepare, pretrain, finetune and evaluate Transformer language models."""

import sys

from lmforge.core import interrupts

# `python -m lmforge.<stage>`: argv[0] is "-m" while the stage's module is found and imported.
# From here on (first thing: interrupts is standard library only) an interrupt is one line and
# exit 130, also while the heavy imports run.
if sys.argv[:1] == ["-m"]:
    interrupts.early()

from lmforge.core import import_guard  # noqa: E402 (after the interrupt handler, on purpose)

__version__ = "0.1.0"

# torchmetrics (imported by Lightning) would load transformers whenever the [hf] extra is installed.
import_guard.install()
