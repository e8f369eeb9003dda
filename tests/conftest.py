"""Shared test fixtures: paths to the real samples in ../shared/data (skipped when absent)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GESTURE_JAX_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(rel: str) -> Path:
    """Path of a real sample file, or skip the test with the reason when it is absent."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"real sample {p} is absent (../shared/data is not beside this checkout)")
    return p


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: real-data tests need ../shared/data beside the checkout")
    return SHARED_DATA
