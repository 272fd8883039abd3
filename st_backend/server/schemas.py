"""Request and response shapes: OpenAI's /v1/embeddings, Cohere/Jina rerank, vLLM's /score, /classify, /pooling
and /tokenize, TEI's /embed_sparse. Field types are strict (no "1" for 1, no 1 for "a") so the OpenAPI document
says exactly what is accepted; unknown fields are ignored, as OpenAI-compatible servers do for clients that send
extras."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, StrictBool, StrictInt, StrictStr


def _utf8(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"); no tokenizer takes them, so they are a 422, not a 500.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"the text holds {text[exc.start]!r} at character {exc.start}, which is not valid UTF-8"
        ) from exc
    return text


Text = Annotated[StrictStr, AfterValidator(_utf8)]
TokenId = Annotated[StrictInt, Field(ge=0)]
# OpenAI's four input forms: one text, many texts, one tokenized input, many tokenized inputs.
EmbeddingInput = Text | list[Text] | list[TokenId] | list[list[TokenId]]
Role = Literal["query", "document"]
# Names other servers use for the same two roles (Cohere, Voyage, Jina).
InputType = Literal[
    "query", "document", "search_query", "search_document", "passage", "retrieval.query", "retrieval.passage"
]


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EmbeddingRequest(Request):
    input: EmbeddingInput = Field(description="A text, a list of texts, token ids, or a list of token id lists.")
    model: StrictStr | None = Field(None, description="A served model name (GET /v1/models); default: the first.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: each embedding as little-endian float32 bytes, base64-encoded."
    )
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="Keep the first N dimensions (Matryoshka); only sizes the model declares."
    )
    user: StrictStr | None = None
    prompt_name: StrictStr | None = Field(None, description="A key of the model's prompts (GET /info).")
    prompt: Text | None = Field(None, description="Text put in front of every input; overrides prompt_name.")
    input_type: InputType | None = Field(None, description="query -> encode_query, document -> encode_document.")
    role: Role | None = Field(None, description="Same as input_type.")
    normalize: StrictBool | None = Field(None, description="L2-normalise (after dimensions); default: the model's.")
    truncate: StrictBool = Field(
        True, description="Cut inputs to the model's max_seq_length as ST does; false: longer inputs are a 400."
    )


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class RerankDocument(Request):
    text: Text


class RerankRequest(Request):
    query: Text
    documents: list[Text | RerankDocument] = Field(description="Texts, or objects with a text field.")
    model: StrictStr | None = Field(
        None, description="A cross-encoder (the default when one is served), embedding or multi-vector model."
    )
    top_n: Annotated[StrictInt, Field(ge=1)] | None = Field(None, description="Return the n best; default: all.")
    return_documents: StrictBool = False
    prompt_name: StrictStr | None = None
    prompt: Text | None = None
    truncate: StrictBool = True


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: Usage


Texts = Text | list[Text]


class ScoreRequest(Request):
    """vLLM's four spellings of the two sides: text_1 / text_2, queries / documents, queries / items, data_1 /
    data_2 (one name of each side)."""

    text_1: Texts | None = Field(None, description="One text (scored against every text_2) or a list.")
    text_2: Texts | None = Field(None, description="One text or a list (pairwise with a list text_1).")
    queries: Texts | None = Field(None, description="Same as text_1.")
    documents: Texts | None = Field(None, description="Same as text_2.")
    items: Texts | None = Field(None, description="Same as text_2.")
    data_1: Texts | None = Field(None, description="Same as text_1.")
    data_2: Texts | None = Field(None, description="Same as text_2.")
    model: StrictStr | None = Field(
        None, description="A cross-encoder (the default when one is served), embedding or multi-vector model."
    )
    prompt_name: StrictStr | None = Field(
        None, description="Cross-encoders: the pair's prompt; embedding / multi-vector models: the queries' prompt."
    )
    prompt: Text | None = None
    truncate: StrictBool = True


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[ScoreData]
    usage: Usage


class ClassifyRequest(Request):
    input: Text | list[Text] | list[Annotated[list[Text], Field(min_length=2, max_length=2)]] = Field(
        description="A text, texts, or [text, text_pair] pairs."
    )
    model: StrictStr | None = None
    truncate: StrictBool = True


class ClassifyData(BaseModel):
    index: int
    label: str
    probs: list[float]
    logits: list[float]
    num_classes: int


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[ClassifyData]
    usage: Usage


class PoolingRequest(Request):
    input: EmbeddingInput
    model: StrictStr | None = None
    task: Literal["embed", "token_embed", "embed_sparse"] = Field(
        "embed",
        description="embed: one vector per input (a sparse model's: dense, vocabulary-sized); token_embed: one "
        "vector per token; embed_sparse (sparse models): the nonzero {index, value} entries of each input.",
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    prompt_name: StrictStr | None = None
    prompt: Text | None = None
    input_type: InputType | None = None
    role: Role | None = None
    normalize: StrictBool | None = None
    truncate: StrictBool = True
    max_active_dims: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="Sparse models: keep each input's largest entries (ST's max_active_dims)."
    )


class SparseValue(BaseModel):
    index: int
    value: float


class PoolingData(BaseModel):
    index: int
    object: Literal["pooling"] = "pooling"
    data: list[float] | list[list[float]] | list[SparseValue] | str


class PoolingResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[PoolingData]
    usage: Usage


class EmbedSparseRequest(Request):
    inputs: Text | list[Text] = Field(description="A text or a list of texts.")
    model: StrictStr | None = Field(None, description="A served sparse model; default: the first.")
    truncate: StrictBool = Field(
        True, description="Cut inputs to the model's max_seq_length as ST does; false: longer inputs are a 400."
    )
    truncation_direction: Literal["right", "Right", "left", "Left"] | None = Field(
        None, description="TEI's; only right (ST's truncation) is served."
    )
    prompt_name: StrictStr | None = Field(None, description="A key of the model's prompts (GET /info).")
    prompt: Text | None = Field(None, description="Text put in front of every input; overrides prompt_name.")
    input_type: InputType | None = Field(None, description="query -> encode_query, document -> encode_document.")
    role: Role | None = Field(None, description="Same as input_type.")
    max_active_dims: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="Keep each input's largest entries (ST's max_active_dims)."
    )


class EmbedSparseResponse(RootModel[list[list[SparseValue]]]):
    """TEI's: for each input, its nonzero entries sorted by index."""


class TokenizeRequest(Request):
    input: Text | list[Text] | None = Field(None, description="A text or texts (or use prompt).")
    prompt: Text | None = Field(None, description="vLLM's name for a single input text.")
    model: StrictStr | None = None
    add_special_tokens: StrictBool = True


class TokenizeData(BaseModel):
    index: int
    ids: list[int]
    tokens: list[str]
    count: int


class TokenizeResponse(BaseModel):
    model: str
    data: list[TokenizeData]
    count: int
    max_model_len: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "st_backend"
    kind: Literal["embedding", "cross-encoder", "multi-vector", "sparse"]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
