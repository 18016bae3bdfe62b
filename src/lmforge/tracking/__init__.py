"""MLflow and DVC bookkeeping: runs and their tags (``runs``), what a run consumed
(``lineage``), what may leave the machine (``safety``), sweeps as nested runs (``sweep``), the
Model Registry (``registry``) and learning curves (``curves``)."""
