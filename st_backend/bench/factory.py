"""One factory of random-weight models: the tests, the examples and ``st-backend bench`` all build theirs here.

A model is (architecture, size, task, tokenizer): ``arch`` one of ``ARCHS``; ``size`` ``"tiny"`` (the test size,
``TINY``), a real size of ``SIZES`` (``"bert-base"``, ``"qwen3-0.6b"``, ...) or a dict of config dims; ``task``
``"base"`` (``AutoModel``), ``"seq-cls"`` (``…ForSequenceClassification`` with ``num_labels``: a CrossEncoder dir)
or ``"causal-lm"`` (``…ForCausalLM``, decoders only: a yes/no reranker's CrossEncoder dir); ``tokenizer``
``"tiny"`` (trained offline for the family on a built-in corpus, ``tiny_tokenizers.py``) or ``"minilm"`` (the
embedded all-MiniLM-L6-v2 tokenizer, ``st_backend.default_model``). Nothing is read from the network or ``../shared``.

The tokenizer picks the recipe, and the recipes are fixed (tests compare against them byte for byte):

- ``"tiny"`` (tests): weights N(0, ``INIT_RANGE`` = 0.2), large enough that masking / window / position bugs
  change outputs clearly, seeded by ``seed_for(arch, task, num_labels)``; every special-token id of the config
  from the tokenizer; ``max_len`` ``MAX_LEN`` (64).
- ``"minilm"`` (benchmarks, examples): the config's default init (0.02) under seed 0; the config's default ids,
  except those outside the 30,522-token vocabulary (ModernBERT's) and the pad id of a decoder's
  sequence-classification head (it finds each row's last token by it), which come from the tokenizer;
  ``max_len`` 512.

``max_position_embeddings`` is ``max_len`` (+ 2 for XLM-R: its positions start at ``padding_idx + 1 = 2``) and the
saved tokenizer's ``model_max_length`` is ``max_len``, so ``SentenceTransformer(dir).max_seq_length == max_len``.

Public API::

    model_config(arch, tok, *, tokenizer="tiny", size="tiny", task="base", num_labels=1, max_len=None)
    load_tokenizer(arch, root=None, tokenizer="tiny")
    build_hf_dir(arch, root, task="base", *, num_labels=1, size="tiny", tokenizer="tiny", max_len=None) -> Path
    build_st_dir(arch, root, *, pooling_mode=None, include_prompt=True, dense=None, normalize=False, prompts=None,
                 default_prompt_name=None, max_seq_length=None, similarity_fn_name=None, **model) -> Path
    build_multi_vector_dir(arch, root, *, dim=128, **model) -> Path
    save_multi_vector_pipeline(backbone, path, *, projection, ...)    # ColBERT fixtures around other backbones
    projection_weight(arch, hidden, dim); seed_for(*parts); cached_build(path, build)

(``**model``: ``size`` / ``tokenizer`` / ``max_len`` of the backbone.) Built directories are cached inside
``root`` by argument key, written to a temporary directory first and renamed into place, so repeated calls are
cheap and concurrent builders never see partial directories.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tiny_tokenizers import BASE_SEED, MAX_LEN, TOKENIZER_BUILDERS, VOCAB_SIZE, corpus

ARCHS = ("bert", "xlm-roberta", "modernbert", "qwen3", "llama")
ENCODER_ARCHS = ("bert", "xlm-roberta", "modernbert")
DECODER_ARCHS = ("qwen3", "llama")
TASKS = ("base", "seq-cls", "causal-lm")
TOKENIZERS = ("tiny", "minilm")
#: ``max_len`` of models on the embedded MiniLM tokenizer (its own ``model_max_length``).
MINILM_MAX_LEN = 512
#: ModernBERT local (sliding-window) attention span of the tiny size: ``local_attention`` in the config (total
#: window; each token sees ``local_attention // 2`` tokens to either side).
MODERNBERT_LOCAL_ATTENTION = 8
#: Std of the random weight init of the tiny recipe (see the module docstring).
INIT_RANGE = 0.2
#: Bump to invalidate caches when a recipe changes.
RECIPE_VERSION = 1

SMALL_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
SMALL_DECODER = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
#: The test size: config dims of each architecture's tiny model.
TINY: dict[str, dict[str, Any]] = {
    "bert": dict(SMALL_ENCODER, type_vocab_size=2),
    "xlm-roberta": dict(SMALL_ENCODER, type_vocab_size=1),
    "modernbert": dict(  # layer_types: full, sliding, full
        SMALL_ENCODER,
        num_hidden_layers=3,
        global_attn_every_n_layers=2,
        local_attention=MODERNBERT_LOCAL_ATTENTION,
        classifier_pooling="mean",
    ),
    "qwen3": dict(SMALL_DECODER, head_dim=16, intermediate_size=128, tie_word_embeddings=True),
    "llama": dict(SMALL_DECODER, intermediate_size=128, tie_word_embeddings=False),
}
_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
#: Real sizes: name -> (arch, config dims).
SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "bert-base": ("bert", _BASE),
    "bert-large": ("bert", _LARGE),
    "xlm-roberta-large": ("xlm-roberta", _LARGE),
    "modernbert-base": ("modernbert", dict(_BASE, num_hidden_layers=22, intermediate_size=1152)),
    "qwen3-0.6b": (
        "qwen3",
        dict(_LARGE, num_hidden_layers=28, num_key_value_heads=8, head_dim=128, intermediate_size=3072),
    ),
}

_CLASS_PREFIX = {
    "bert": "Bert",
    "xlm-roberta": "XLMRoberta",
    "modernbert": "ModernBert",
    "qwen3": "Qwen3",
    "llama": "Llama",
}
_CLASS_SUFFIX = {"base": "Model", "seq-cls": "ForSequenceClassification", "causal-lm": "ForCausalLM"}
#: config field -> the tokenizer's special token (``<role>_token_id``) it holds, per architecture.
_SPECIAL_IDS = {
    "bert": {"pad_token_id": "pad"},
    "xlm-roberta": {"pad_token_id": "pad", "bos_token_id": "bos", "eos_token_id": "eos"},
    "modernbert": {
        "pad_token_id": "pad",
        "cls_token_id": "cls",
        "sep_token_id": "sep",
        "bos_token_id": "cls",
        "eos_token_id": "sep",
    },
    "qwen3": {"bos_token_id": "eos", "eos_token_id": "eos", "pad_token_id": "pad"},  # <|endoftext|>
    "llama": {"bos_token_id": "bos", "eos_token_id": "eos", "pad_token_id": "pad"},
}
_POSITION_OFFSET = {"xlm-roberta": 2}


@dataclass(frozen=True)
class Family:
    """One more architecture for the factory, registered from its own file under ``families/``.

    The five ``ARCHS`` form the full equivalence matrix of the tests; a registered family gets its own, smaller
    checks (``tests/families``), so adding one does not multiply the matrix. Fields are those the dicts above hold
    for the five: ``tiny`` the test-size config dims, ``special_ids`` config field -> tokenizer role, ``tokenizer``
    a builder of its tiny trained tokenizer (``tiny_tokenizers.py`` has the shared ones), ``classes`` a task ->
    transformers class name override (T5's encoder is ``T5EncoderModel``), ``config`` extra config fields of every
    recipe.
    """

    arch: str
    class_prefix: str
    tiny: dict[str, Any]
    special_ids: dict[str, str]
    tokenizer: Callable[[], Any]
    decoder: bool = False
    position_offset: int = 0
    classes: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    FAMILIES[family.arch] = family
    TINY[family.arch] = family.tiny
    _CLASS_PREFIX[family.arch] = family.class_prefix
    _SPECIAL_IDS[family.arch] = family.special_ids
    TOKENIZER_BUILDERS[family.arch] = family.tokenizer
    if family.position_offset:
        _POSITION_OFFSET[family.arch] = family.position_offset
    return family


def is_decoder(arch: str) -> bool:
    return arch in DECODER_ARCHS or (arch in FAMILIES and FAMILIES[arch].decoder)


def _class_name(arch: str, task: str) -> str:
    override = FAMILIES[arch].classes.get(task) if arch in FAMILIES else None
    return override or _CLASS_PREFIX[arch] + _CLASS_SUFFIX[task]


__all__ = [
    "ARCHS",
    "DECODER_ARCHS",
    "ENCODER_ARCHS",
    "FAMILIES",
    "Family",
    "INIT_RANGE",
    "MAX_LEN",
    "MINILM_MAX_LEN",
    "MODERNBERT_LOCAL_ATTENTION",
    "SIZES",
    "TASKS",
    "TINY",
    "TOKENIZERS",
    "TOKENIZER_BUILDERS",
    "VOCAB_SIZE",
    "build_hf_dir",
    "build_multi_vector_dir",
    "build_st_dir",
    "cached_build",
    "corpus",
    "default_pooling_mode",
    "dims_for",
    "is_decoder",
    "load_tokenizer",
    "model_config",
    "projection_weight",
    "register_family",
    "save_multi_vector_pipeline",
    "seed_for",
]


def seed_for(*parts: Any) -> int:
    """A 32-bit seed that depends only on ``parts`` (and the recipe version)."""
    digest = hashlib.sha256(repr((BASE_SEED, RECIPE_VERSION) + parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def default_pooling_mode(arch: str) -> str:
    """Pooling used by ``build_st_dir`` when ``pooling_mode`` is None: "lasttoken" for decoders, else "mean"."""
    return "lasttoken" if is_decoder(arch) else "mean"


def dims_for(arch: str, size: str | Mapping[str, Any] = "tiny") -> dict[str, Any]:
    """Config dims of ``arch`` at ``size``: ``"tiny"``, a name of ``SIZES`` (of this arch) or a dict of dims."""
    if isinstance(size, Mapping):
        return dict(size)
    if size == "tiny":
        return dict(TINY[arch])
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: tiny, {', '.join(SIZES)} or a dict of config dims")
    size_arch, dims = SIZES[size]
    if size_arch != arch:
        raise ValueError(f"size {size!r} is a {size_arch} size, not {arch!r}")
    return dict(dims)


def _check(arch: str, task: str, size, tokenizer: str) -> None:
    if arch not in ARCHS and arch not in FAMILIES:
        raise ValueError(f"Unknown arch {arch!r}; expected one of {ARCHS + tuple(FAMILIES)}")
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}")
    if task == "causal-lm" and not is_decoder(arch):
        raise ValueError(f"task='causal-lm' is only available for decoder archs {DECODER_ARCHS}, not {arch!r}")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer {tokenizer!r}; expected one of {TOKENIZERS}")
    dims_for(arch, size)


def _max_len(tokenizer: str, max_len: int | None) -> int:
    return max_len or (MAX_LEN if tokenizer == "tiny" else MINILM_MAX_LEN)


# --------------------------------------------------------------------------------------------------------------
# Tokenizers, configs, checkpoints
# --------------------------------------------------------------------------------------------------------------


def _tokenizer_dir(arch: str, root: Path) -> Path:
    """Save (once per root) the trained tokenizer of ``arch``; the dir is reused by all model variants."""
    path = Path(root) / f"v{RECIPE_VERSION}" / "tokenizers" / arch
    return cached_build(path, lambda tmp: TOKENIZER_BUILDERS[arch]().save_pretrained(tmp))


def load_tokenizer(arch: str, root: Path | None = None, tokenizer: str = "tiny"):
    """Load the ``tokenizer`` of ``arch`` with ``AutoTokenizer``: the tiny one (built and cached in ``root`` on
    first use) or the embedded MiniLM one."""
    from transformers import AutoTokenizer

    if tokenizer == "minilm":
        from ..default_model import default_model_path

        return AutoTokenizer.from_pretrained(default_model_path())
    return AutoTokenizer.from_pretrained(_tokenizer_dir(arch, Path(root)))


def model_config(
    arch: str,
    tok,
    *,
    tokenizer: str = "tiny",
    size: str | Mapping[str, Any] = "tiny",
    task: str = "base",
    num_labels: int = 1,
    max_len: int | None = None,
):
    """The transformers config of a random ``arch`` model on the loaded tokenizer ``tok`` (named ``tokenizer``,
    which picks the recipe: see the module docstring)."""
    import transformers

    _check(arch, task, size, tokenizer)
    config_class = getattr(transformers, _CLASS_PREFIX[arch] + "Config")
    kwargs: dict[str, Any] = {
        "vocab_size": len(tok),
        **dims_for(arch, size),
        "max_position_embeddings": _max_len(tokenizer, max_len) + _POSITION_OFFSET.get(arch, 0),
        **(FAMILIES[arch].config if arch in FAMILIES else {}),
    }
    if task == "seq-cls":
        kwargs["num_labels"] = num_labels
    ids = {field: getattr(tok, f"{role}_token_id") for field, role in _SPECIAL_IDS[arch].items()}
    if tokenizer == "tiny":
        kwargs.update(ids, initializer_range=INIT_RANGE)
    else:
        defaults = config_class()
        for field, token_id in ids.items():
            default = getattr(defaults, field, None)
            outside = default is not None and default >= len(tok)
            head_needs = field == "pad_token_id" and default is None and task == "seq-cls"
            if token_id is not None and (outside or head_needs):
                kwargs[field] = token_id
    return config_class(**kwargs)


def _hf_name(arch: str, task: str, num_labels: int, size, tokenizer: str, max_len: int | None) -> str:
    """The cache name; tiny test models keep the short ``<arch>-<task>[-<n>labels]``."""
    if isinstance(size, Mapping):
        size = f"{arch}-dims{hashlib.sha256(json.dumps(dict(size), sort_keys=True).encode()).hexdigest()[:12]}"
    name = (arch if size == "tiny" else size) + f"-{task}" + (f"-{num_labels}labels" if task == "seq-cls" else "")
    if tokenizer != "tiny":
        name += f"-{tokenizer}"
    if _max_len(tokenizer, max_len) != _max_len(tokenizer, None):
        name += f"-len{max_len}"
    return name


def build_hf_dir(
    arch: str,
    root: Path,
    task: str = "base",
    *,
    num_labels: int = 1,
    size: str | Mapping[str, Any] = "tiny",
    tokenizer: str = "tiny",
    max_len: int | None = None,
) -> Path:
    """Build (or reuse) a random-weight HF checkpoint of ``arch`` for ``task`` inside ``root``.

    The directory holds tokenizer files, ``config.json`` and ``model.safetensors`` as written by
    ``save_pretrained``; a ``seq-cls`` / ``causal-lm`` dir is what ``CrossEncoder(dir)`` loads. The weights only
    depend on the arguments, so e.g. ``base`` dirs of one arch are bitwise identical across roots and runs.
    """
    _check(arch, task, size, tokenizer)
    root = Path(root)
    name = _hf_name(arch, task, num_labels, size, tokenizer, max_len)

    def build(path: Path) -> None:
        import torch
        import transformers

        tok = load_tokenizer(arch, root, tokenizer)
        tok.model_max_length = _max_len(tokenizer, max_len)
        config = model_config(
            arch, tok, tokenizer=tokenizer, size=size, task=task, num_labels=num_labels, max_len=max_len
        )
        model_class = getattr(transformers, _class_name(arch, task))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_for(arch, task, num_labels) if tokenizer == "tiny" else 0)
            model = model_class(config).eval()
        model.save_pretrained(path)
        tok.save_pretrained(path)

    return cached_build(root / f"v{RECIPE_VERSION}" / "hf" / name, build)


# --------------------------------------------------------------------------------------------------------------
# Sentence Transformers pipelines
# --------------------------------------------------------------------------------------------------------------


def _model_key(arch: str, size, tokenizer: str, max_len: int | None) -> dict[str, Any]:
    """Key entries of the backbone: none for the tiny test model (keeps its cache names and dense seeds)."""
    if (size, tokenizer, max_len) == ("tiny", "tiny", None):
        return {}
    return {"model": _hf_name(arch, "base", 1, size, tokenizer, max_len)}


def build_st_dir(
    arch: str,
    root: Path,
    *,
    pooling_mode: str | tuple[str, ...] | list[str] | None = None,
    include_prompt: bool = True,
    dense: int | None = None,
    normalize: bool = False,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    max_seq_length: int | None = None,
    similarity_fn_name: str | None = None,
    size: str | Mapping[str, Any] = "tiny",
    tokenizer: str = "tiny",
    max_len: int | None = None,
) -> Path:
    """Build (or reuse) a saved SentenceTransformer pipeline around the ``base`` model of ``arch``.

    Modules: ``Transformer`` -> ``Pooling(pooling_mode, include_prompt)`` [-> ``Dense(pool_dim, dense)``]
    [-> ``Normalize()``]. ``pooling_mode`` defaults to ``default_pooling_mode(arch)`` ("lasttoken" for decoders,
    like Qwen3-Embedding; "mean" for encoders); any ST pooling mode string or tuple of them is accepted.
    ``max_seq_length`` (if given) overrides the tokenizer's ``model_max_length`` (default ``max_len``).
    """
    if pooling_mode is None:
        pooling_mode = default_pooling_mode(arch)
    if isinstance(pooling_mode, list):
        pooling_mode = tuple(pooling_mode)
    key = {
        "arch": arch,
        "pooling_mode": pooling_mode,
        "include_prompt": include_prompt,
        "dense": dense,
        "normalize": normalize,
        "prompts": prompts,
        "default_prompt_name": default_prompt_name,
        "max_seq_length": max_seq_length,
        "similarity_fn_name": similarity_fn_name,
        **_model_key(arch, size, tokenizer, max_len),
    }
    key_str = json.dumps(key, sort_keys=True, default=str)
    mode_tag = "+".join(pooling_mode) if isinstance(pooling_mode, tuple) else pooling_mode
    name = f"{arch}-{mode_tag}-{hashlib.sha256(key_str.encode()).hexdigest()[:12]}"
    root = Path(root)
    hf_dir = build_hf_dir(arch, root, "base", size=size, tokenizer=tokenizer, max_len=max_len)

    def build(path: Path) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

        transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length)
        dim = transformer.get_embedding_dimension()
        pooling = Pooling(dim, pooling_mode=pooling_mode, include_prompt=include_prompt)
        modules = [transformer, pooling]
        if dense is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed_for("dense", key_str))
                modules.append(Dense(pooling.get_embedding_dimension(), dense))
        if normalize:
            modules.append(Normalize())
        model = SentenceTransformer(
            modules=modules,
            prompts=prompts,
            default_prompt_name=default_prompt_name,
            similarity_fn_name=similarity_fn_name,
            device="cpu",
        )
        model.save(str(path))

    return cached_build(root / f"v{RECIPE_VERSION}" / "st" / name, build)


def projection_weight(arch: str, hidden: int, dim: int):
    """The deterministic ``(dim, hidden)`` ColBERT projection (nn.Linear default init, seeded by arch and dims)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for("colbert-dense", arch, hidden, dim))
        return torch.nn.Linear(hidden, dim, bias=False).weight.detach().clone()


def save_multi_vector_pipeline(
    backbone: Path,
    path: Path,
    *,
    projection,
    query_expansion: Mapping[str, Any] | None = None,
    query_length: int | None = None,
    document_length: int | None = None,
    skiplist: list[str] | None = None,
    prompts: dict[str, str] | None = None,
    similarity_fn_name: str | None = None,
    create_model_card: bool = True,
) -> None:
    """Save a ColBERT ``MultiVectorEncoder`` at ``path``: ``[Transformer(backbone), Dense(projection, no bias, on
    token_embeddings), MultiVectorMask(skiplist), Normalize(token_embeddings)]``."""
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    transformer = Transformer(
        str(backbone), query_expansion=query_expansion, query_length=query_length, document_length=document_length
    )
    dim, hidden = projection.shape
    dense = Dense(
        hidden,
        dim,
        bias=False,
        activation_function=torch.nn.Identity(),
        init_weight=projection,
        module_input_name="token_embeddings",
    )
    modules = [transformer, dense, MultiVectorMask(skiplist), Normalize(module_input_name="token_embeddings")]
    model = MultiVectorEncoder(modules=modules, prompts=prompts, similarity_fn_name=similarity_fn_name, device="cpu")
    model.save(str(path), create_model_card=create_model_card)


def build_multi_vector_dir(
    arch: str,
    root: Path,
    *,
    dim: int = 128,
    size: str | Mapping[str, Any] = "tiny",
    tokenizer: str = "tiny",
    max_len: int | None = None,
) -> Path:
    """Build (or reuse) a ColBERT ``MultiVectorEncoder`` (``save_multi_vector_pipeline``, no skiplist, no
    prompts) around the ``base`` model of ``arch``, projecting to ``dim``."""
    root = Path(root)
    hf_dir = build_hf_dir(arch, root, "base", size=size, tokenizer=tokenizer, max_len=max_len)
    hidden = dims_for(arch, size)["hidden_size"]
    return cached_build(
        root / f"v{RECIPE_VERSION}" / "multi-vector" / f"{hf_dir.name}-dim{dim}",
        lambda path: save_multi_vector_pipeline(hf_dir, path, projection=projection_weight(arch, hidden, dim)),
    )


# --------------------------------------------------------------------------------------------------------------
# Caching helper
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_progress_bars():
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def cached_build(path: Path, build) -> Path:
    """Run ``build(tmp_dir)`` unless ``path`` exists, then atomically move the result to ``path``."""
    path = Path(path)
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with _quiet_progress_bars():
            build(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():  # a concurrent builder won the race otherwise
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _load_families() -> None:
    import importlib
    import pkgutil

    from . import families

    for info in pkgutil.iter_modules(families.__path__):
        importlib.import_module(f"{families.__name__}.{info.name}")


_load_families()  # each file under families/ registers its Family
