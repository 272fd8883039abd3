"""A Qwen3-Reranker-style causal LM reranker: a yes/no chat template, the LM head read only at each pair's
last token, and template-aware truncation. The model is tiny and random (offline), so scores are noise;
what the example shows is the plumbing, checked against plain ST."""

import shutil
import tempfile

import numpy as np
import sentence_transformers

from st_backend import CrossEncoder
from st_backend.bench.factory import build_hf_dir

TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    "<Instruct>: {{ (messages | selectattr('role', 'eq', 'system') | map(attribute='content') | first) "
    "or 'Given a web search query, retrieve relevant passages that answer the query' }}\n"
    "<Query>: {{ (messages | selectattr('role', 'eq', 'query') | first).content }}\n"
    "<Document>: {{ (messages | selectattr('role', 'eq', 'document') | first).content }}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)

root = tempfile.mkdtemp(prefix="st_backend_example_")
path = str(build_hf_dir("qwen3", root, "causal-lm", tokenizer="minilm"))  # tiny, on MiniLM's tokenizer
try:
    # ForCausalLM checkpoints load as a causal LM + LogitScore("yes", "no"), as in plain ST.
    model = CrossEncoder(path, device="cpu", chat_template=TEMPLATE)
    plain = sentence_transformers.CrossEncoder(path, device="cpu", processor_kwargs={"chat_template": TEMPLATE})
    pairs = [("what is a cat?", "A cat is a small domesticated carnivorous mammal."), ("what is a cat?", "Paris")]
    print("scores:", model.predict(pairs))
    print("max |st_backend - plain ST|:", np.abs(model.predict(pairs) - plain.predict(pairs)).max())

    # A document far longer than max_length: the document is cut, the template's tail is kept.
    model.max_seq_length = 128
    long_pair = ("what is a cat?", "cats are small and furry animals " * 200)
    ids = np.asarray(model.token_ids([long_pair])[0])
    tail = model[0].tokenizer("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>", add_special_tokens=False)
    ends = ids[-len(tail["input_ids"]) :].tolist() == tail["input_ids"]
    print(f"fed {len(ids)} tokens (max_seq_length 128); ends with the template's suffix: {ends}")
    print("score of the truncated pair:", model.predict([long_pair]))
finally:
    shutil.rmtree(root, ignore_errors=True)
