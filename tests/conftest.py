"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the network: a hub lookup fails fast instead of hanging on a proxy. Set
# before anything imports huggingface_hub, which reads these once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"


@pytest.fixture
def shared_data_dir() -> Path:
    """The team's shared data folder (``../shared/data`` next to the repo).

    Skips when it is absent (e.g. a fresh clone elsewhere); fails instead when
    ``LMFORGE_REQUIRE_SHARED_DATA=1``, so CI that provisions the data cannot skip silently.
    """
    path = SHARED_DATA.resolve()
    if not path.is_dir():
        reason = f"shared data folder {path} is absent"
        if os.environ.get("LMFORGE_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{reason} but LMFORGE_REQUIRE_SHARED_DATA=1 requires it")
        pytest.skip(f"{reason}; provide it or set LMFORGE_REQUIRE_SHARED_DATA=1 to fail instead")
    return path
