"""Tiny random-weight ColBERT (late-interaction) checkpoints in the on-disk formats that ST 6.2 loads.

Builds, entirely offline, small deterministic ColBERT checkpoints around the tiny encoder backbones of
``st_backend.bench.factory`` (``tiny_models``) in the three formats that ``sentence_transformers.MultiVectorEncoder``
loads, so that tests can compare plain ST against our engine on every load path. The format writers are test
fixtures and stay here; backbones, projections, seeds and the cache come from the factory.

Public API::

    FORMATS = ("st", "pylate", "stanford")
    ARCHS = ("bert", "xlm-roberta", "modernbert")
    build_colbert_dir(fmt, arch, root, *, query_expansion=DEFAULT_QUERY_EXPANSION, skiplist=DEFAULT_SKIPLIST,
                      prefixes=True, dim=16, query_length=None, document_length=None) -> Path
    prefix_tokens(fmt) -> tuple[str, str]   # (query, document) marker tokens used when prefixes=True

Every (fmt, arch) combination loads with ``MultiVectorEncoder(path)`` as
``[Transformer, Dense(hidden -> dim, no bias, on token_embeddings), MultiVectorMask, Normalize(token_embeddings)]``
with the written projection weight (never ST's randomly-initialised fallback projection).

Formats
-------
``"st"``: a native ST 6.2 ``MultiVectorEncoder(modules=[...]).save(path)``. ``query_expansion`` /
``query_length`` / ``document_length`` go to the Transformer (``None`` stays unset), ``skiplist`` to
``MultiVectorMask``; prompts are ``{"query": "[Q] ", "document": "[D] "}`` (``""`` / ``""`` without prefixes).
The ``[Q] `` / ``[D] `` markers (trailing space included, like PyLate's) are added to the tokenizer as special,
non-normalized tokens with ``add_special_tokens({"additional_special_tokens": ...})`` and the embedding matrix is
resized: exactly the state ST 6.2 leaves a PyLate BERT checkpoint in after loading it, i.e. what re-saving a
migrated PyLate model natively gives. (Plain-text prompts on an unmodified tokenizer are covered by
``tiny_models.build_st_dir``.)

``"pylate"``: the layout PyLate 1.3/1.4 (on ST 5.1-5.3) writes, which ST calls "PyLate v3":
``modules.json`` = ``[sentence_transformers.models.Transformer at "", pylate.models.Dense.Dense at "1_Dense"]``;
``1_Dense/config.json`` = ``{in_features, out_features, bias: false, activation_function:
"torch.nn.modules.linear.Identity", use_residual: false}`` + ``1_Dense/model.safetensors`` (``linear.weight``);
``sentence_bert_config.json`` = ``{"max_seq_length": document_length - 1, "do_lower_case": false}`` (PyLate's
tokenize() leaves max_seq_length at length - 1 for the prefix token, and it gets saved; e.g.
GTE-ModernColBERT-v1 ships 299 for document_length 300); ``config_sentence_transformers.json`` with
``model_type: "ColBERT"``, ``prompts: {"query": "", "document": ""}``, ``similarity_fn_name: "MaxSim"``,
``query_prefix`` / ``document_prefix``, ``query_length``, ``document_length``, ``attend_to_expansion_tokens``,
``skiplist_words``, ``do_query_expansion``. Like PyLate, the prefixes ``[Q] `` / ``[D] `` (its defaults for every
backbone; ``[unused0]`` / ``[unused1]`` only come from Stanford conversions) are added with
``tokenizer.add_tokens`` (non-special, ``normalized=True``) with resized embeddings, and the tokenizer's pad token
is set to its mask token (PyLate pads query expansions with it), so the saved tokenizer has
``pad_token: "[MASK]"`` / ``"<mask>"``. ``prefixes=False`` writes ``""`` prefixes and adds no tokens (newer
PyLate's prefix-free models). With expansion on, ``query_length`` is the expansion length; with
``query_expansion=None`` (``do_query_expansion: false``) it is the query truncation length (``query_length`` or
PyLate's default 32).

``"stanford"``: a Stanford-NLP ``HF_ColBERT`` save: ``config.json`` (the backbone's config, ``architectures:
["HF_ColBERT"]``), tokenizer files, ``model.safetensors`` holding the backbone under its ``base_model_prefix``
(``bert.*`` / ``roberta.*`` / ``model.*``, as ``HF_ColBERT.save_pretrained`` writes it) plus ``linear.weight`` at the
root, and ``artifact.metadata`` (a ColBERTConfig subset: ``query_token_id: "[unused0]"``, ``doc_token_id:
"[unused1]"``, ``query_maxlen`` = expansion length, ``doc_maxlen``, ``attend_to_mask_tokens``,
``mask_punctuation``, ``dim``, ...). For BERT the tokenizer's vocab gets plain ``[unused0]`` / ``[unused1]``
entries (real BERT vocabularies have them; the tiny one does not), with resized embeddings; ST registers them as
special tokens at load. XLM-R / ModernBERT vocabularies have no such entries (Stanford's own tokenizer maps the
markers to ``unk`` there); the tokenizer is left as is and ST prepends ``"[unused0] "`` as plain text. Stanford
always expands queries and can only express a punctuation skiplist or none, so ``query_expansion=None``,
``prefixes=False``, non-"fixed" strategies, expansion tokens and other skiplists raise ``ValueError``.

Defaults are the same for every format (classic ColBERT): ``query_expansion = {"strategy": "fixed", "attend":
False, "length": 32}``, ``skiplist = string.punctuation``, ``prefixes = True``. ``document_length=None`` leaves it
unset for ``"st"``; PyLate / Stanford configs always carry one, so they get ``DEFAULT_DOCUMENT_LENGTH`` (48, below
the tiny models' 64-token maximum). For pylate / stanford, ``query_length`` must be None or equal to the
expansion length when expansion is on (the formats store one value for both).

What ST 6.2 does on load (checked): pylate BERT's ``"[Q] "`` / ``"[D] "`` (normalized, so the lowercasing
tokenizer emits them as ``"[q] "``) and stanford BERT's ``[unused0]`` / ``[unused1]`` get re-registered as special
non-normalized tokens (same ids), so prompt text tokenizes to the single marker id; pylate's ``max_seq_length``
becomes the tokenizer's ``model_max_length`` (47), while documents are still cut at ``document_length`` (48);
stanford logs a transformers LOAD REPORT with ``linear.weight`` UNEXPECTED (as for the real colbertv2.0); on
stanford XLM-R / ModernBERT the shattered ``[unused1]`` pieces ``[`` / ``]`` are punctuation, so the skiplist drops
them from documents. The punctuation skiplist warns once that ``"`"`` is not a single token of the tiny BERT /
XLM-R vocabularies (it is dropped).

Weights only depend on (arch, dim, added marker tokens): the backbone is the factory's ``build_hf_dir(arch)``'s,
added marker rows are seeded by token string, and the projection by (arch, dim) (``projection_weight``). So e.g. the "st" and "pylate"
builds of one arch hold identical weights and give the same embeddings where their configs agree. Built
directories are cached in ``root`` by argument key (atomic temp dir + rename via the factory's ``cached_build``).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from st_backend.bench.factory import (
    ENCODER_ARCHS,
    INIT_RANGE,
    MAX_LEN,
    RECIPE_VERSION,
    build_hf_dir,
    cached_build,
    dims_for,
    projection_weight,
    save_multi_vector_pipeline,
    seed_for,
)

FORMATS = ("st", "pylate", "stanford")
ARCHS = ENCODER_ARCHS
DEFAULT_QUERY_EXPANSION: Mapping[str, Any] = {"strategy": "fixed", "attend": False, "length": 32}
DEFAULT_SKIPLIST: tuple[str, ...] = tuple(string.punctuation)
#: document_length written by the pylate / stanford formats when none is given (they always carry one).
DEFAULT_DOCUMENT_LENGTH = 48
#: PyLate's default query_length, written when query expansion is off and no query_length is given.
PYLATE_DEFAULT_QUERY_LENGTH = 32

# Bump to invalidate cached ColBERT builds when the recipe changes.
_COLBERT_RECIPE_VERSION = 1
_PREFIXES = {"st": ("[Q] ", "[D] "), "pylate": ("[Q] ", "[D] "), "stanford": ("[unused0]", "[unused1]")}
# ``__version__`` recorded in the pylate config: the ST / transformers pins of PyLate 1.4 (torch is illustrative).
_PYLATE_VERSIONS = {"sentence_transformers": "5.3.0", "transformers": "5.3.0", "pytorch": "2.10.0+cu128"}


def prefix_tokens(fmt: str) -> tuple[str, str]:
    """The (query, document) marker tokens ``fmt`` uses with ``prefixes=True``."""
    return _PREFIXES[fmt]


# --------------------------------------------------------------------------------------------------------------
# Backbones with marker tokens
# --------------------------------------------------------------------------------------------------------------


def _load_backbone(arch: str, root: Path, style: str | None):
    """``(model, tokenizer)`` of the tiny ``base`` checkpoint of ``arch``, with the marker tokens of ``style``.

    ``style``: None (unchanged), "pylate" (``add_tokens``, pad = mask), "pylate-noprefix" (pad = mask only),
    "st" (special non-normalized tokens), "stanford" (plain BERT vocab entries; other vocabularies unchanged).
    Added embedding rows are N(0, INIT_RANGE), seeded by (arch, token).
    """
    import torch
    from transformers import AddedToken, AutoModel, AutoTokenizer, BertTokenizer

    hf_dir = build_hf_dir(arch, root, "base")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModel.from_pretrained(hf_dir).eval()
    added: list[str] = []  # new tokens, in id order
    if style in ("pylate", "pylate-noprefix"):
        if style == "pylate":
            added = list(_PREFIXES["pylate"])
            tokenizer.add_tokens(added)
        tokenizer.pad_token = tokenizer.mask_token
    elif style == "st":
        added = list(_PREFIXES["st"])
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [AddedToken(t, normalized=False, special=True) for t in added]}
        )
    elif style == "stanford" and arch == "bert":
        added = list(_PREFIXES["stanford"])
        vocab = dict(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))
        for token in added:
            vocab[token] = len(vocab)
        tokenizer = BertTokenizer(vocab=vocab, model_max_length=MAX_LEN)
    old_size = model.get_input_embeddings().weight.shape[0]
    if added:
        assert len(tokenizer) == old_size + len(added), (len(tokenizer), old_size, added)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        weight = model.get_input_embeddings().weight
        with torch.no_grad():
            for token_id, token in enumerate(added, start=old_size):
                generator = torch.Generator().manual_seed(seed_for("colbert-token", arch, token))
                weight[token_id] = torch.randn(weight.shape[1], generator=generator) * INIT_RANGE
    return model, tokenizer


def _save_backbone(path: Path, model, tokenizer) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _colbert_root(root: Path) -> Path:
    return Path(root) / f"v{RECIPE_VERSION}" / f"colbert-v{_COLBERT_RECIPE_VERSION}"


# --------------------------------------------------------------------------------------------------------------
# Format writers
# --------------------------------------------------------------------------------------------------------------


def _write_st(path: Path, arch: str, root: Path, cfg: dict[str, Any]) -> None:
    if cfg["prefixes"]:
        backbone = cached_build(
            _colbert_root(root) / "backbones" / f"{arch}-st",
            lambda tmp: _save_backbone(tmp, *_load_backbone(arch, root, "st")),
        )
    else:
        backbone = build_hf_dir(arch, root, "base")
    query, document = _PREFIXES["st"] if cfg["prefixes"] else ("", "")
    save_multi_vector_pipeline(
        backbone,
        path,
        projection=projection_weight(arch, dims_for(arch)["hidden_size"], cfg["dim"]),
        query_expansion=cfg["query_expansion"],
        query_length=cfg["query_length"],
        document_length=cfg["document_length"],
        skiplist=cfg["skiplist"],
        prompts={"query": query, "document": document},
        similarity_fn_name="maxsim",
        create_model_card=False,
    )


def _write_pylate(path: Path, arch: str, root: Path, cfg: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    expansion = cfg["query_expansion"]
    document_length = cfg["document_length"] or DEFAULT_DOCUMENT_LENGTH
    _save_backbone(path, *_load_backbone(arch, root, "pylate" if cfg["prefixes"] else "pylate-noprefix"))
    _write_json(path / "sentence_bert_config.json", {"max_seq_length": document_length - 1, "do_lower_case": False})

    hidden = dims_for(arch)["hidden_size"]
    dense_dir = path / "1_Dense"
    dense_dir.mkdir()
    dense_config = {
        "in_features": hidden,
        "out_features": cfg["dim"],
        "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity",
        "use_residual": False,
    }
    _write_json(dense_dir / "config.json", dense_config)
    weight = projection_weight(arch, hidden, cfg["dim"]).contiguous()
    save_file({"linear.weight": weight}, str(dense_dir / "model.safetensors"), metadata={"format": "pt"})

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]
    _write_json(path / "modules.json", modules)
    query, document = _PREFIXES["pylate"] if cfg["prefixes"] else ("", "")
    if expansion is None:
        query_length = cfg["query_length"] or PYLATE_DEFAULT_QUERY_LENGTH
    else:
        query_length = expansion["length"]
    config = {
        "model_type": "ColBERT",
        "__version__": _PYLATE_VERSIONS,
        "prompts": {"query": "", "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "MaxSim",
        "query_prefix": query,
        "document_prefix": document,
        "query_length": query_length,
        "document_length": document_length,
        "attend_to_expansion_tokens": bool(expansion and expansion.get("attend", False)),
        "skiplist_words": list(cfg["skiplist"] or []),
        "do_query_expansion": expansion is not None,
    }
    _write_json(path / "config_sentence_transformers.json", config)


def _write_stanford(path: Path, arch: str, root: Path, cfg: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    model, tokenizer = _load_backbone(arch, root, "stanford")
    hidden = model.config.hidden_size
    # HF_ColBERT wraps the backbone as ``self.<base_model_prefix>`` next to its own ``linear`` projection.
    prefix = model.base_model_prefix
    weights = {f"{prefix}.{key}": value.detach().contiguous().clone() for key, value in model.state_dict().items()}
    weights["linear.weight"] = projection_weight(arch, hidden, cfg["dim"]).contiguous()
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    model.config.architectures = ["HF_ColBERT"]
    model.config.save_pretrained(path)
    tokenizer.save_pretrained(path)

    expansion = cfg["query_expansion"]
    query, document = _PREFIXES["stanford"]
    metadata = {
        "query_token_id": query,
        "doc_token_id": document,
        "query_token": "[Q]",
        "doc_token": "[D]",
        "ncells": None,
        "centroid_score_threshold": None,
        "ndocs": None,
        "load_index_with_mmap": False,
        "index_path": None,
        "nbits": 2,
        "kmeans_niters": 4,
        "checkpoint": f"tiny-{arch}",
        "dim": cfg["dim"],
        "doc_maxlen": cfg["document_length"] or DEFAULT_DOCUMENT_LENGTH,
        "mask_punctuation": bool(cfg["skiplist"]),
        "query_maxlen": expansion["length"],
        "attend_to_mask_tokens": bool(expansion.get("attend", False)),
        "interaction": "colbert",
        "relu": False,
        "similarity": "cosine",
        "bsize": 32,
        "accumsteps": 1,
        "lr": 1e-05,
        "maxsteps": 400000,
        "nway": 2,
        "use_ib_negatives": False,
        "reranker": False,
        "distillation_alpha": 1.0,
        "ignore_scores": False,
        "model_name": None,
        "meta": {"version": "colbert-v0.4"},
    }
    _write_json(path / "artifact.metadata", metadata)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf8") as f:
        json.dump(data, f, indent=2)


_WRITERS = {"st": _write_st, "pylate": _write_pylate, "stanford": _write_stanford}


# --------------------------------------------------------------------------------------------------------------
# Public builder
# --------------------------------------------------------------------------------------------------------------


def build_colbert_dir(
    fmt: str,
    arch: str,
    root: Path,
    *,
    query_expansion: Mapping[str, Any] | None = DEFAULT_QUERY_EXPANSION,
    skiplist: Sequence[str] | None = DEFAULT_SKIPLIST,
    prefixes: bool = True,
    dim: int = 16,
    query_length: int | None = None,
    document_length: int | None = None,
) -> Path:
    """Build (or reuse) a tiny ColBERT checkpoint of ``arch`` in format ``fmt`` inside ``root``.

    ``query_expansion``: an ST ``QueryExpansionConfig`` dict (``strategy`` / ``attend`` / ``token`` / ``length``) or
    None for no expansion. ``skiplist``: the document-side skiplist words (None or empty: none). ``prefixes``: use
    the format's marker tokens (``prefix_tokens(fmt)``) as query / document prefixes. ``dim``: projection output
    size. ``query_length`` / ``document_length``: per-task max lengths. See the module docstring for how each
    format stores these and which combinations it cannot express (those raise ``ValueError``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; expected one of {FORMATS}")
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r}; ColBERT checkpoints are built for {ARCHS}")
    expansion = dict(query_expansion) if query_expansion is not None else None
    skiplist = list(skiplist) if skiplist else []
    if fmt in ("pylate", "stanford"):
        if expansion is not None:
            if expansion.get("strategy") != "fixed" or expansion.get("token") is not None:
                raise ValueError(f"{fmt!r} can only express query_expansion strategy 'fixed' with the default token")
            if set(expansion) - {"strategy", "attend", "token", "length"} or not isinstance(
                expansion.get("length"), int
            ):
                raise ValueError(f"Invalid query_expansion {expansion!r}")
            if query_length is not None and query_length != expansion["length"]:
                raise ValueError(f"{fmt!r} stores one query length: query_length must be None or the expansion length")
    if fmt == "stanford":
        if expansion is None:
            raise ValueError("Stanford ColBERT always expands queries: query_expansion=None is not expressible")
        if not prefixes:
            raise ValueError("Stanford ColBERT always uses query / document marker tokens: prefixes=False")
        if skiplist and sorted(skiplist) != sorted(string.punctuation):
            raise ValueError("Stanford ColBERT only expresses a string.punctuation skiplist (mask_punctuation) or none")
    key = {
        "fmt": fmt,
        "arch": arch,
        "query_expansion": expansion,
        "skiplist": skiplist,
        "prefixes": bool(prefixes),
        "dim": dim,
        "query_length": query_length,
        "document_length": document_length,
    }
    key_str = json.dumps(key, sort_keys=True)
    name = f"{fmt}-{arch}-{hashlib.sha256(key_str.encode()).hexdigest()[:12]}"
    root = Path(root)
    return cached_build(_colbert_root(root) / name, lambda path: _WRITERS[fmt](path, arch, root, key))
