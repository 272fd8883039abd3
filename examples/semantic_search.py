"""Semantic search over a local corpus with the embedded default model (offline)."""

from sentence_transformers.util import semantic_search

from st_backend import SentenceTransformer
from st_backend.default_model import default_model_path

corpus = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "A recipe for pancakes needs flour, eggs, milk and a pinch of salt.",
    "Jupiter is the largest planet in the Solar System.",
    "To reset your card PIN, open the banking app and choose Security.",
]
queries = ["Which planet is the biggest?", "How do I change my PIN?", "What do pancakes need?"]

model = SentenceTransformer(default_model_path(), device="cpu")
corpus_embeddings = model.encode_document(corpus, convert_to_tensor=True, normalize_embeddings=True)
query_embeddings = model.encode_query(queries, convert_to_tensor=True, normalize_embeddings=True)
for query, hits in zip(queries, semantic_search(query_embeddings, corpus_embeddings, top_k=2)):
    print(query)
    for hit in hits:
        print(f"  {hit['score']:.3f}  {corpus[hit['corpus_id']]}")
