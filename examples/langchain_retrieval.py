"""LangChain retrieval with reranking on st_backend (offline): an in-memory vector store over the embedded
all-MiniLM-L6-v2, then CrossEncoderReranker. The reranker here is the same backbone with a fresh, untrained
classification head (no reranker ships offline), so its order only shows the plumbing."""

import tempfile

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
from langchain_core.vectorstores import InMemoryVectorStore
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from st_backend.adapters.langchain import STBackendCrossEncoder, STBackendEmbeddings
from st_backend.default_model import default_model_path

corpus = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Paris is the capital and largest city of France.",
    "Jupiter is the largest planet in the Solar System.",
    "To reset your card PIN, open the banking app and choose Security.",
    "The Louvre in Paris is the world's most-visited museum.",
]

embeddings = STBackendEmbeddings(default_model_path(), device="cpu")
store = InMemoryVectorStore.from_texts(corpus, embeddings)
retriever = store.as_retriever(search_kwargs={"k": 4})
print("retrieved:", [d.page_content for d in retriever.invoke("What is there to see in Paris?")])

with tempfile.TemporaryDirectory() as path:
    AutoModelForSequenceClassification.from_pretrained(default_model_path(), num_labels=1).save_pretrained(path)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(path)
    reranker = CrossEncoderReranker(model=STBackendCrossEncoder(path, device="cpu"), top_n=2)
    pipeline = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=retriever)
    print("reranked:", [d.page_content for d in pipeline.invoke("What is there to see in Paris?")])
