import logging
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

SHARED_DATA = TESTS.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def default_model_path() -> str:
    from st_backend.default_model import default_model_path

    return default_model_path()


@pytest.fixture
def feeding_thread():
    """Mark the test's thread as a pipeline feeding thread: its tokenizer calls may go to the worker processes
    (engine/tokenize.py FEEDING), as the GPU pipeline's threads' do."""
    from st_backend.engine.tokenizer import FEEDING

    FEEDING.active = True
    yield
    FEEDING.active = False


@pytest.fixture
def notes(caplog):
    """The notes of calls that ran ST's own path during the test (each reason is said once per process: the ones
    said before are forgotten first)."""
    from st_backend.models import _fallback

    _fallback._said.clear()
    with caplog.at_level(logging.WARNING, logger="st_backend"):
        yield lambda: [r.getMessage() for r in caplog.records if "own path" in r.getMessage()]
