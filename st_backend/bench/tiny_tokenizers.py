"""The tiny tokenizers of the random-weight test models (``factory.py``), trained offline on a built-in corpus.

One tokenizer per architecture family, each wrapped in the tokenizer class that real checkpoints of the family
use, so that ``AutoTokenizer.from_pretrained`` reloads it faithfully: WordPiece (BERT), sentencepiece-like Unigram
with Metaspace (XLM-R), byte-level BPE (ModernBERT, Qwen3) and sentencepiece-like BPE with byte fallback (Llama).
Trained in-process with the ``tokenizers`` library on ``corpus()`` (~750 English sentences): no files, no network.
Deterministic across processes: only the plain BPE trainer is used (see ``_train_bpe``).
"""

from __future__ import annotations

import functools
import json
import random

#: Model maximum sequence length (tokens, including special tokens) of every tiny model: the tokenizers'
#: ``model_max_length``. Deliberately small (64) so that tests can exercise truncation at the model maximum.
MAX_LEN = 64
#: Target vocabulary size of the trained tokenizers.
VOCAB_SIZE = 1000
#: Seed of the corpus (and, in ``factory.py``, of every tiny model's weights).
BASE_SEED = 1234

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
    rng = random.Random(BASE_SEED)
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


def unigram_pieces() -> list[tuple[str, float]]:
    """The scored Metaspace pieces of the tiny XLM-R Unigram (sentencepiece-like, as DeBERTa-v3's and T5's), without
    its specials: each family puts its own around them."""
    import json

    tok = _xlm_roberta_tokenizer()
    vocab = json.loads(tok.backend_tokenizer.to_str())["model"]["vocab"]
    return [(piece, score) for piece, score in vocab if piece not in tok.all_special_tokens]


#: arch -> a function returning a fresh trained tokenizer (``model_max_length == MAX_LEN``).
TOKENIZER_BUILDERS = {
    "bert": _bert_tokenizer,
    "xlm-roberta": _xlm_roberta_tokenizer,
    "modernbert": _modernbert_tokenizer,
    "qwen3": _qwen3_tokenizer,
    "llama": _llama_tokenizer,
}
