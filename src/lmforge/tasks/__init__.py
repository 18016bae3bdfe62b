"""The task axis: what differs between tasks lives in ``lmforge.tasks.<name>/``, behind the
:class:`~lmforge.tasks.base.Task` interface (:mod:`lmforge.tasks.base`); the stages find a task
through :mod:`lmforge.tasks.registry` and never name one.

The names below are re-exported for callers written before ``base`` and ``registry`` existed;
new code imports from those modules. Light: nothing heavy is imported.
"""

from lmforge.tasks.base import (  # noqa: F401
    HF_FOLDER,
    Task,
    TaskData,
    check_hf_shards,
    continued_checkpoint,
    eval_plots,
    hf_checkpoint,
    hf_model_record,
    model_special_ids,
    save_checkpoint,
    word_vectors_shape,
)
from lmforge.tasks.registry import finetuned_task, get_task  # noqa: F401
