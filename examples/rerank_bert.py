"""A plain BERT cross-encoder on st_backend: the embedded all-MiniLM-L6-v2 backbone with a fresh (random)
classification head, scored by plain ST and by st_backend side by side."""

import tempfile

import numpy as np
import sentence_transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from st_backend import CrossEncoder
from st_backend.default_model import default_model_path

with tempfile.TemporaryDirectory() as path:
    AutoModelForSequenceClassification.from_pretrained(default_model_path(), num_labels=1).save_pretrained(path)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(path)

    model = CrossEncoder(path, device="cpu")
    plain = sentence_transformers.CrossEncoder(path, device="cpu")

    query = "How many people live in Berlin?"
    documents = [
        "Berlin has a population of 3,520,031 registered inhabitants.",
        "Berlin is well known for its museums.",
        "New York City is famous for the Metropolitan Museum of Art.",
    ]
    for hit in model.rank(query, documents, return_documents=True):
        print(f"{hit['score']:.4f}  {hit['text']}")
    pairs = [(query, d) for d in documents]
    print("max |st_backend - plain ST|:", np.abs(model.predict(pairs) - plain.predict(pairs)).max())
