"""Config file for CLI tests: ``--config=tests/tiny_train_config.py:DATA_OUT`` (see training_fixtures)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import training_fixtures  # noqa: E402


def get_config(data_out: str = ""):
    cfg = training_fixtures.tiny_config(data_out)
    cfg.lock()
    return cfg
