"""Drop-in quickstart: change one import, get the same embeddings (offline, embedded default model)."""

from st_backend import EngineConfig, SentenceTransformer
from st_backend.default_model import default_model_path

model = SentenceTransformer(default_model_path(), device="cpu", engine=EngineConfig(max_batch_tokens=16384))

sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
embeddings = model.encode(sentences)
print(embeddings.shape)  # (3, 384)
print(model.similarity(embeddings, embeddings))

query = model.encode_query("Is it sunny?")
docs = model.encode_document(sentences)
print(model.similarity(query, docs))
