"""The task axis: what differs between tasks lives in ``lmforge.tasks.<name>/``, behind the
:class:`~lmforge.tasks.base.Task` interface (:mod:`lmforge.tasks.base`); the stages find a task
through :mod:`lmforge.core.task_registry` and never name one. Task modules import from
``lmforge.tasks.base`` (never from this package), and no stage."""
