"""A nemotron-rerank-style classifier (LlamaForSequenceClassification) with its score template given at load,
like a serving engine's --chat-template. Tiny random weights (offline): the scores are noise; the example
shows that the template reaches the model and that st_backend equals plain ST."""

import shutil
import tempfile

import numpy as np
import sentence_transformers

from st_backend import CrossEncoder
from st_backend.bench.factory import build_hf_dir

TEMPLATE = 'question:{{ messages[0]["content"] }} \n \n passage:{{ messages[1]["content"] }}'

root = tempfile.mkdtemp(prefix="st_backend_example_")
path = str(build_hf_dir("llama", root, "seq-cls", tokenizer="minilm"))  # tiny, on MiniLM's tokenizer
try:
    model = CrossEncoder(path, device="cpu", chat_template=TEMPLATE)
    plain = sentence_transformers.CrossEncoder(path, device="cpu", processor_kwargs={"chat_template": TEMPLATE})
    query = "how do I reset my PIN?"
    documents = ["Go to settings and choose Reset PIN.", "Our branches open at nine.", "PIN resets need your card."]
    for hit in model.rank(query, documents, return_documents=True):
        print(f"{hit['score']:.4f}  {hit['text']}")
    print("rendered:", repr(model.rendered((query, documents[0]))))
    pairs = [(query, d) for d in documents]
    print("max |st_backend - plain ST|:", np.abs(model.predict(pairs) - plain.predict(pairs)).max())
finally:
    shutil.rmtree(root, ignore_errors=True)
