"""What generating texts returns, whichever model writes them: lmforge's own prefix LM
(:mod:`lmforge.tasks.text2text.runtime`) or a ``model=hf`` checkpoint
(:mod:`lmforge.tasks.text2text.hf_runtime`). Below both, so the runtime that loads either model
and the ``transformers`` one that returns this never import each other in a loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Generated:
    """Outputs in input order, and what happened on the way (counted, never silent)."""

    texts: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # new tokens per output, EOS excluded
    truncated_inputs: int = 0  # inputs cut to fit the source budget / the context
    stopped_at_context: int = 0  # outputs cut by the model's context, not by EOS
    stopped_at_max_new_tokens: int = 0
    # generate.rerank: the decoder's own outputs, and which outputs are a training target
    decoded: list[str] = field(default_factory=list)
    retrieved: list[bool] = field(default_factory=list)
