"""Tiny random-weight model factories for tests.

Builds small, deterministic, random-weight Hugging Face checkpoints (tokenizer + config + weights) and
Sentence Transformers pipelines on disk, entirely offline. Tokenizers are trained in-process with the
``tokenizers`` library on a small built-in English corpus, then wrapped in the tokenizer class that the real
checkpoints of each architecture use, so that ``AutoTokenizer.from_pretrained`` reloads them faithfully.

Public API::

    ARCHS = ("bert", "xlm-roberta", "modernbert", "qwen3", "llama")
    build_hf_dir(arch, root, task="base", *, num_labels=1) -> Path
    build_st_dir(arch, root, *, pooling_mode=None, include_prompt=True, dense=None, normalize=False,
                 prompts=None, default_prompt_name=None, max_seq_length=None, similarity_fn_name=None) -> Path

Built directories are cached inside ``root`` by argument key, so repeated calls are cheap. Builds are written
to a temporary directory first and renamed into place, so concurrent builders never see partial directories.

Model maximum lengths (``MAX_LEN``) are deliberately small (64 tokens) so that tests can exercise truncation at
the model maximum. XLM-RoBERTa uses ``max_position_embeddings = MAX_LEN + 2`` because of its position offset
(``padding_idx + 1``); the tokenizer's ``model_max_length`` is ``MAX_LEN`` for every architecture, so
``SentenceTransformer(...)[0].max_seq_length == MAX_LEN`` for every built pipeline.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

ARCHS = ("bert", "xlm-roberta", "modernbert", "qwen3", "llama")
ENCODER_ARCHS = ("bert", "xlm-roberta", "modernbert")
DECODER_ARCHS = ("qwen3", "llama")
TASKS = ("base", "seq-cls", "causal-lm")

#: Model maximum sequence length (tokens, including special tokens) of every tiny model.
MAX_LEN = 64
#: ModernBERT local (sliding-window) attention span: ``local_attention`` in the config (total window; each token
#: sees ``local_attention // 2`` tokens to either side).
MODERNBERT_LOCAL_ATTENTION = 8
#: Target vocabulary size of the trained tokenizers.
VOCAB_SIZE = 1000
#: Std of the random weight init. Much larger than the usual 0.02 so that attention / MLP blocks contribute
#: substantially to the outputs (with 0.02 the residual stream is ~ the input embeddings, and masking,
#: sliding-window or position bugs would barely change the embeddings).
INIT_RANGE = 0.2

# Bump to invalidate caches when the recipe changes.
_RECIPE_VERSION = 1
_BASE_SEED = 1234

# --------------------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------------------

_FIXED_SENTENCES = """\
The quick brown fox jumps over the lazy dog.
A journey of a thousand miles begins with a single step.
She sells sea shells by the sea shore, doesn't she?
How much wood would a woodchuck chuck if a woodchuck could chuck wood?
It was the best of times, it was the worst of times.
To be, or not to be: that is the question.
All that glitters is not gold.
I think, therefore I am.
Python 3.12 was released in October 2023, and it's faster than ever!
The meeting is scheduled for 10:30 AM on Monday, March 4th.
Please call 555-0123 or e-mail info@example.com for details.
Prices rose by 12.5% in 2022; analysts expect $3,400 next year.
"Where are you going?" asked the old man. "Home," she replied.
Machine learning models convert sentences into dense vector embeddings.
Semantic search finds documents that are similar in meaning to a query.
Transformers use self-attention to mix information between tokens.
The capital of France is Paris, and the capital of Japan is Tokyo.
Water boils at 100 degrees Celsius at sea level.
My favourite colours are red, green and blue.
We'll meet at the café near the museum around 5 p.m.
Don't forget to bring your umbrella; it might rain later.
The children played football in the park until sunset.
He couldn't believe how quickly the summer had passed.
Scientists discovered a new species of frog in the rainforest.
The recipe calls for two cups of flour, three eggs, and a pinch of salt.
Can you recommend a good book about the history of mathematics?
The train to Berlin departs from platform 9 at 14:45.
Our team won the championship after a very close final match.
Read the instructions carefully before you start the exam.
The stock market fell sharply on Tuesday after the announcement.
Artificial intelligence is changing the way we work and live.
A cat sat on the mat, watching the birds outside the window.
The weather forecast predicts snow in the mountains this weekend.
Neural networks learn representations from large amounts of data.
This query asks which passage best answers the question.
Represent this sentence for searching relevant passages:
Instruct: Given a web search query, retrieve relevant passages that answer the query
Query: what is the tallest mountain in the world?
Mount Everest is the highest mountain above sea level, at 8,849 metres.
The hospital opened a new wing for children last year.
Hello world! Hello again, world. Goodbye, world...
Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 42 and 1000 appear often.
Symbols: + - * / = < > ( ) [ ] { } # @ & % $ ! ? ; : , . ' " _ ~ ^ | \\
"""

_SUBJECTS = tuple(
    "the dog|a young girl|my neighbour|the teacher|our company|the old man|a scientist|the students|"
    "the government|this model|the robot|a small bird|the committee|my brother|the engineer|"
    "a famous writer|the farmer|the children|her cat|the city council|the doctor|a tourist|the pilot|"
    "the chef|everyone|nobody|the search engine|the database".split("|")
)
_VERBS = tuple(
    "likes|reads|builds|writes|finds|watches|explains|cooks|paints|sells|buys|remembers|forgets|"
    "describes|studies|answers|carries|opens|closes|visits|measures|compares|translates|searches|sorts|"
    "ranks|encodes|retrieves|celebrates|ignores".split("|")
)
_OBJECTS = tuple(
    "a red apple|the newspaper|a wooden house|long letters|the hidden treasure|every movie|"
    "the theory of relativity|spicy noodles|the ocean at night|old computers|fresh bread|the answer|"
    "a difficult question|the front door|the museum|the temperature|two sentences|the documents|"
    "a summary|the results|the birthday party|the rules|a blue bicycle|the mountains|ancient languages|"
    "the weather report|music from the eighties|the river".split("|")
)
_TAILS = tuple(
    "every morning|on weekends|without any help|very carefully|in the kitchen|after school|before lunch|"
    "during the storm|with great enthusiasm|for the first time|again and again|at the library|"
    "quite slowly|in winter|because it is fun|when nobody is watching||near the station|late at night|"
    "with a smile|in three languages|as quickly as possible".split("|")
)
_QUESTIONS = tuple(
    "why does {s} like {o}?|where did {s} find {o}?|when will {s} visit {o}?|how often does {s} read?|"
    "what is the best way to describe {o}?|who {v} {o}?|is it true that {s} {v} {o}?".split("|")
)


@functools.cache
def corpus() -> tuple[str, ...]:
    """A deterministic, varied English corpus (~750 sentences) for tokenizer training."""
    rng = random.Random(_BASE_SEED)
    sentences = [line for line in _FIXED_SENTENCES.splitlines() if line.strip()]
    for i in range(600):
        s, v, o, t = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)
        text = f"{s} {v} {o} {t}".strip()
        r = i % 6
        if r == 0:
            text = text[0].upper() + text[1:] + "."
        elif r == 1:
            text = text.upper() + "!"
        elif r == 2:
            text = rng.choice(_QUESTIONS).format(s=s, v=v, o=o)
            text = text[0].upper() + text[1:]
        elif r == 3:
            text = f"{text}, and {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.randint(0, 9999)} things."
        elif r == 4:
            text = (
                f"In {rng.randint(1900, 2030)}, {text}; it cost {rng.randint(1, 999)}.{rng.randint(0, 99):02d} euros."
            )
        sentences.append(text)
    for s in _SUBJECTS + _VERBS + _OBJECTS + _TAILS:  # make sure every word is seen in isolation too
        sentences.append(s)
    return tuple(sentences)


# --------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------


def _train_bpe(vocab_size: int, *, normalizer=None, pre_tokenizer=None, initial_alphabet=()):
    """Train a BPE model on ``corpus()`` and return ``(alphabet, merges)`` with canonical ordering.

    Only the plain BPE trainer is used because it is deterministic across processes (tie-breaks depend on token
    ids, which are reproducible when there is no ``continuing_subword_prefix``). The WordPiece and Unigram
    trainers of ``tokenizers`` 0.23 are NOT: their vocabularies / scores change from run to run, so WordPiece and
    Unigram vocabularies are derived from BPE results below instead.
    """
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=list(initial_alphabet), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer, length=len(corpus()))
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    merged = {a + b for a, b in merges}
    alphabet = sorted(t for t in model["vocab"] if t not in merged)
    return alphabet, merges


def _bpe_vocab(head: list[str], alphabet: list[str], merges: list[tuple[str, str]], tail: list[str] = ()):
    """Canonical BPE vocab: ``head`` tokens, alphabet, merge results in merge order, then ``tail`` tokens."""
    tokens = list(head) + list(alphabet) + [a + b for a, b in merges] + list(tail)
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


def _metaspace(split: bool = True):
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=split)


def _bert_tokenizer():
    # WordPiece vocab derived from a word-start-marked BPE: "▁x" pieces become word-initial "x", other pieces
    # become "##x" continuations; every alphabet character is present in both forms so nothing is out of vocab.
    from tokenizers import pre_tokenizers
    from transformers import BertTokenizer

    template = BertTokenizer().backend_tokenizer  # class-default normalizer / pre-tokenizer
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    alphabet, merges = _train_bpe(
        VOCAB_SIZE - len(specials),
        normalizer=template.normalizer,
        pre_tokenizer=pre_tokenizers.Sequence([template.pre_tokenizer, _metaspace()]),
    )
    chars = [c for c in alphabet if c != "\u2581"]
    pieces = [a + b for a, b in merges]
    pieces = [p[1:] if p.startswith("\u2581") else "##" + p for p in pieces]
    vocab: dict[str, int] = {}
    for token in specials + chars + ["##" + c for c in chars] + pieces:
        if token:
            vocab.setdefault(token, len(vocab))
    return BertTokenizer(vocab=vocab, model_max_length=MAX_LEN)


def _xlm_roberta_tokenizer():
    # Sentencepiece-like Unigram: pieces from a Metaspace BPE, scores = log relative frequency of each piece when
    # segmenting the corpus with that BPE (a deterministic stand-in for Unigram EM).
    import math

    from tokenizers import Tokenizer, models
    from transformers import XLMRobertaTokenizer

    template = XLMRobertaTokenizer().backend_tokenizer
    # XLMRobertaTokenizer hardcodes unk_id=3: <s>=0, <pad>=1, </s>=2, <unk>=3 like the real checkpoint.
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    alphabet, merges = _train_bpe(VOCAB_SIZE - len(specials), pre_tokenizer=template.pre_tokenizer)
    bpe_vocab = _bpe_vocab([], alphabet, merges)
    bpe = Tokenizer(models.BPE(vocab=bpe_vocab, merges=merges))
    bpe.pre_tokenizer = template.pre_tokenizer
    counts = dict.fromkeys(bpe_vocab, 1)  # add-one smoothing
    for encoding in bpe.encode_batch(list(corpus())):
        for token in encoding.tokens:
            counts[token] += 1
    total = sum(counts.values())
    scored = sorted(((t, round(math.log(c / total), 6)) for t, c in counts.items()), key=lambda x: (-x[1], x[0]))
    vocab = [(t, 0.0) for t in specials] + scored
    return XLMRobertaTokenizer(vocab=vocab, model_max_length=MAX_LEN)


def _modernbert_tokenizer():
    # Real ModernBERT ships a byte-level BPE (OLMo/GPT-NeoX style) tokenizer.json with a [CLS] $A [SEP]
    # post-processor and tokenizer_class "PreTrainedTokenizerFast"; transformers 5 forces TokenizersBackend
    # for model_type "modernbert" anyway, which loads tokenizer.json verbatim.
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import TokenizersBackend

    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # at the end of the vocab, like the real one
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet, merges = _train_bpe(
        VOCAB_SIZE - len(specials), pre_tokenizer=byte_level, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    vocab = _bpe_vocab([], alphabet, merges, specials)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, lstrip=t == "[MASK]") for t in specials])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return TokenizersBackend(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=MAX_LEN,
        model_input_names=["input_ids", "attention_mask"],
    )


def _qwen3_tokenizer():
    # Like Qwen3-Embedding: byte-level BPE, <|endoftext|> (after the BPE vocab) is pad and eos, and the
    # tokenizer.json post-processor appends <|endoftext|> to every sequence (no add_eos_token flag).
    from tokenizers import pre_tokenizers, processors
    from transformers import Qwen2Tokenizer

    template = Qwen2Tokenizer().backend_tokenizer
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet, merges = _train_bpe(
        VOCAB_SIZE - len(specials),
        normalizer=template.normalizer,
        pre_tokenizer=template.pre_tokenizer,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    hf_tok = Qwen2Tokenizer(
        vocab=_bpe_vocab([], alphabet, merges, specials),
        merges=merges,
        padding_side="left",
        model_max_length=MAX_LEN,
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    eos_id = hf_tok.convert_tokens_to_ids("<|endoftext|>")
    hf_tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0",
        pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eos_id)],
    )
    return hf_tok


def _llama_tokenizer():
    # Llama-2 style: sentencepiece-like BPE (Metaspace, byte fallback with <0x00>..<0xFF> pieces), BOS <s>
    # prepended, no EOS; plus a <pad> token (at the end of the vocab) and left padding like decoder embedders.
    from transformers import LlamaTokenizer

    head = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    # Trained with split=True so merges never cross word boundaries; LlamaTokenizer uses split=False at
    # inference, which gives the same segmentation because "▁" only ever starts a piece.
    alphabet, merges = _train_bpe(VOCAB_SIZE - len(head) - 1, pre_tokenizer=_metaspace())
    return LlamaTokenizer(
        vocab=_bpe_vocab(head, alphabet, merges, ["<pad>"]),
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        pad_token="<pad>",
        padding_side="left",
        model_max_length=MAX_LEN,
    )


_TOKENIZER_BUILDERS = {
    "bert": _bert_tokenizer,
    "xlm-roberta": _xlm_roberta_tokenizer,
    "modernbert": _modernbert_tokenizer,
    "qwen3": _qwen3_tokenizer,
    "llama": _llama_tokenizer,
}


def _tokenizer_dir(arch: str, root: Path) -> Path:
    """Save (once per root) the trained tokenizer of ``arch``; the dir is reused by all model variants."""
    path = Path(root) / f"v{_RECIPE_VERSION}" / "tokenizers" / arch
    return _cached_build(path, lambda tmp: _TOKENIZER_BUILDERS[arch]().save_pretrained(tmp))


def load_tokenizer(arch: str, root: Path):
    """Load the tiny tokenizer of ``arch`` with ``AutoTokenizer`` (built and cached on first use)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_tokenizer_dir(arch, Path(root)))


# --------------------------------------------------------------------------------------------------------------
# Configs / models
# --------------------------------------------------------------------------------------------------------------


def _config(arch: str, tokenizer, task: str, num_labels: int):
    import transformers as tf

    vocab_size = len(tokenizer)
    common: dict[str, Any] = {"vocab_size": vocab_size, "initializer_range": INIT_RANGE}
    if task == "seq-cls":
        common["num_labels"] = num_labels
    ids = tokenizer.convert_tokens_to_ids
    if arch == "bert":
        return tf.BertConfig(
            **common,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=MAX_LEN,
            type_vocab_size=2,
            pad_token_id=ids("[PAD]"),
        )
    if arch == "xlm-roberta":
        return tf.XLMRobertaConfig(
            **common,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=MAX_LEN + 2,  # positions start at padding_idx + 1 = 2
            type_vocab_size=1,
            pad_token_id=ids("<pad>"),
            bos_token_id=ids("<s>"),
            eos_token_id=ids("</s>"),
        )
    if arch == "modernbert":
        config = tf.ModernBertConfig(
            **common,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=MAX_LEN,
            global_attn_every_n_layers=2,  # layer_types: full, sliding, full
            local_attention=MODERNBERT_LOCAL_ATTENTION,
            pad_token_id=ids("[PAD]"),
            cls_token_id=ids("[CLS]"),
            sep_token_id=ids("[SEP]"),
            bos_token_id=ids("[CLS]"),
            eos_token_id=ids("[SEP]"),
            classifier_pooling="mean",
        )
        assert config.layer_types == ["full_attention", "sliding_attention", "full_attention"], config.layer_types
        return config
    if arch == "qwen3":
        eos = ids("<|endoftext|>")
        return tf.Qwen3Config(
            **common,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=128,
            max_position_embeddings=MAX_LEN,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
            tie_word_embeddings=True,
        )
    if arch == "llama":
        return tf.LlamaConfig(
            **common,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            max_position_embeddings=MAX_LEN,
            bos_token_id=ids("<s>"),
            eos_token_id=ids("</s>"),
            pad_token_id=ids("<pad>"),
            tie_word_embeddings=False,
        )
    raise ValueError(f"Unknown arch {arch!r}; expected one of {ARCHS}")


def _model_class(arch: str, task: str):
    import transformers as tf

    prefix = {
        "bert": "Bert",
        "xlm-roberta": "XLMRoberta",
        "modernbert": "ModernBert",
        "qwen3": "Qwen3",
        "llama": "Llama",
    }[arch]
    suffix = {"base": "Model", "seq-cls": "ForSequenceClassification", "causal-lm": "ForCausalLM"}[task]
    return getattr(tf, prefix + suffix)


def _seed_for(*parts: Any) -> int:
    digest = hashlib.sha256(repr((_BASE_SEED, _RECIPE_VERSION) + parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def build_hf_dir(arch: str, root: Path, task: str = "base", *, num_labels: int = 1) -> Path:
    """Build (or reuse) a tiny random-weight HF checkpoint of ``arch`` for ``task`` inside ``root``.

    ``task`` is ``"base"`` (``AutoModel``), ``"seq-cls"`` (``…ForSequenceClassification`` with ``num_labels``) or
    ``"causal-lm"`` (``…ForCausalLM``; decoder archs only). The directory holds tokenizer files, ``config.json``
    and ``model.safetensors`` as written by ``save_pretrained``. The weights only depend on (arch, task,
    num_labels), so e.g. ``base`` dirs of one arch are always bitwise identical across roots and runs.
    """
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r}; expected one of {ARCHS}")
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}")
    if task == "causal-lm" and arch not in DECODER_ARCHS:
        raise ValueError(f"task='causal-lm' is only available for decoder archs {DECODER_ARCHS}, not {arch!r}")
    root = Path(root)
    name = f"{arch}-{task}" + (f"-{num_labels}labels" if task == "seq-cls" else "")

    def build(path: Path) -> None:
        import torch
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir(arch, root))
        config = _config(arch, tokenizer, task, num_labels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_for(arch, task, num_labels))
            model = _model_class(arch, task)(config).eval()
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    return _cached_build(root / f"v{_RECIPE_VERSION}" / "hf" / name, build)


def default_pooling_mode(arch: str) -> str:
    """Pooling used by ``build_st_dir`` when ``pooling_mode`` is None: "lasttoken" for decoders, else "mean"."""
    return "lasttoken" if arch in DECODER_ARCHS else "mean"


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
) -> Path:
    """Build (or reuse) a saved SentenceTransformer pipeline around the tiny ``base`` model of ``arch``.

    Modules: ``Transformer`` -> ``Pooling(pooling_mode, include_prompt)`` [-> ``Dense(pool_dim, dense)``]
    [-> ``Normalize()``]. ``pooling_mode`` defaults to ``default_pooling_mode(arch)`` ("lasttoken" for decoders,
    like Qwen3-Embedding; "mean" for encoders); any ST pooling mode string or tuple of them is accepted.
    ``max_seq_length`` (if given) overrides the tokenizer's ``model_max_length`` (default ``MAX_LEN``).
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
    }
    key_str = json.dumps(key, sort_keys=True, default=str)
    mode_tag = "+".join(pooling_mode) if isinstance(pooling_mode, tuple) else pooling_mode
    name = f"{arch}-{mode_tag}-{hashlib.sha256(key_str.encode()).hexdigest()[:12]}"
    root = Path(root)
    hf_dir = build_hf_dir(arch, root, "base")

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
                torch.manual_seed(_seed_for("dense", key_str))
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

    return _cached_build(root / f"v{_RECIPE_VERSION}" / "st" / name, build)


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


def _cached_build(path: Path, build) -> Path:
    """Run ``build(tmp_dir)`` unless ``path`` exists, then atomically move the result to ``path``."""
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
