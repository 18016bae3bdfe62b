"""Hydra imports every module of the ``hydra_plugins`` namespace package when it builds its config
search path, which it does for every composition: ``python -m lmforge.<stage>``, the compose API
and DVC's ``dvc exp run`` / ``python -m lmforge.params``. Importing this module registers the
schema's defaults (``lmforge.core.config``) in Hydra's ConfigStore as ``lmforge_schema``, the first entry
of ``conf/config.yaml``'s defaults list: the one home of every default value."""

from lmforge.core.config import register_schema

register_schema()
