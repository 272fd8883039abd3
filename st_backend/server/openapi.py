"""GET /openapi.json: FastAPI's document, narrowed to what this server accepts.

The request models (schemas.py) are static and loose where the routes check more (to answer a 400 that names
the limit, the model or the prompt). The document adds what the routes check, so a body it admits is one the
server does not always refuse: input lists of 1 to --max-inputs items, exactly one of the fields a route takes
one of, and, once the models are loaded, the model names each route takes, their prompt names, the embedding
model's dimensions and token-id range, and /pooling's tasks; a route no served model can answer is left out. What
depends on two fields at once (a task and a model, a prompt and a prompt name) stays as loose as the models.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .auth import OPEN_PATHS
from .bridge import CROSS_ENCODER, EMBEDDING, MULTI_VECTOR, SPARSE, Served
from .dispatch import State
from .embed_routes import POOLING_KINDS
from .score_routes import SCORERS, SIDES

# The model kinds each request's route takes (the ``kinds`` it passes to dispatch.pick; the first served is the
# default). Rerank and score need a cross-encoder with one label (score_routes._one_label).
KINDS = {
    "EmbeddingRequest": (EMBEDDING,),
    "PoolingRequest": (EMBEDDING, SPARSE, MULTI_VECTOR),
    "RerankRequest": SCORERS,
    "ScoreRequest": SCORERS,
    "ClassifyRequest": (CROSS_ENCODER,),
    "EmbedSparseRequest": (SPARSE,),
    "TokenizeRequest": (EMBEDDING, CROSS_ENCODER, MULTI_VECTOR, SPARSE),
}
ONE_LABEL = {"RerankRequest", "ScoreRequest"}
# Fields of which a request gives exactly one (none or two is a 400).
EXACTLY_ONE = {"ScoreRequest": SIDES, "TokenizeRequest": (("input", "prompt"),)}


def document(app: FastAPI, st: State) -> dict:
    """The document (cached once the models are loaded: it names them)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        if name.endswith("Request"):
            for prop in schema.get("properties", {}).values():
                _input_lists(prop, st.config.max_inputs)
        for names in EXACTLY_ONE.get(name, ()):
            schema.setdefault("allOf", []).append({"oneOf": [_given(n) for n in names]})
    sparse = schemas.get("EmbedSparseRequest", {}).get("properties", {}).get("truncation_direction")
    if sparse is not None:  # left is a 400: inputs are cut on the right, as ST cuts them
        _values(sparse, ["right", "Right"])
    if st.ready:
        _served(doc, schemas, st)
    if st.config.api_key:
        doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
        }
        for path, ops in doc["paths"].items():
            if path not in OPEN_PATHS:
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
    if st.ready:
        app.openapi_schema = doc
    return doc


def _members(prop: dict) -> list[dict]:
    return prop.get("anyOf", [prop])


def _input_lists(prop: dict, max_inputs: int) -> None:
    """Every list a request holds is a list of inputs (dispatch.check_count: 1 to --max-inputs), but for one
    tokenized input (a list of ids), which holds at least one id; a list of tokenized inputs holds non-empty ones."""
    for member in _members(prop):
        if member.get("type") != "array":
            continue
        member["minItems"] = max(member.get("minItems", 0), 1)
        items = member.get("items", {})
        if items.get("type") != "integer":
            member["maxItems"] = min(member.get("maxItems", max_inputs), max_inputs)
        if items.get("type") == "array":
            items["minItems"] = max(items.get("minItems", 0), 1)


def _given(name: str) -> dict:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def _values(prop: dict, values: list) -> None:
    """Only these values (or null, where the field takes null)."""
    nullable = any(m.get("type") == "null" for m in _members(prop))
    kind = next((m["type"] for m in _members(prop) if m.get("type") != "null"), "string")
    allowed = [{"type": kind, "enum": values}] if values else []
    allowed += [{"type": "null"}] if nullable else []
    for key in ("type", "enum", "minimum", "maximum"):
        prop.pop(key, None)
    prop["anyOf"] = allowed or [{"not": {}}]


def _required(schema: dict, name: str) -> None:
    prop = schema["properties"][name]
    prop.pop("default", None)
    prop["anyOf"] = [m for m in prop["anyOf"] if m.get("type") != "null"]
    schema.setdefault("required", []).append(name)


def _served(doc: dict, schemas: dict, st: State) -> None:
    served = list(st.bridge.served.values())
    for name, kinds in KINDS.items():
        schema = schemas.get(name)
        if schema is None:
            continue
        ok = [s for s in served if s.kind in kinds and (name not in ONE_LABEL or _one_label(s))]
        if not ok:  # every request would be refused: the route is not served here
            _drop(doc, name)
            continue
        props = schema["properties"]
        _values(props["model"], [alias for s in ok for alias in (s.name, s.path, f"sentence-transformers/{s.name}")])
        default = min((s for s in served if s.kind in kinds), key=lambda s: kinds.index(s.kind))
        if default not in ok:  # the model a request without one gets cannot answer it: name one
            _required(schema, "model")
        if "prompt_name" in props:
            _values(props["prompt_name"], sorted({p for s in ok for p in (getattr(s.model, "prompts", None) or {})}))
    embedder = next((s for s in served if s.kind == EMBEDDING), None)
    for name in ("EmbeddingRequest", "PoolingRequest"):
        props = schemas.get(name, {}).get("properties")
        if props is None:
            continue
        _token_ids(props["input"], embedder, st)
        if embedder is None:
            _values(props["dimensions"], [])
        else:
            _dimensions(props["dimensions"], embedder)
    pooling = schemas.get("PoolingRequest", {}).get("properties")
    if pooling is not None:
        kinds = {s.kind for s in served}
        tasks = [t for t, k in POOLING_KINDS.items() if kinds & set(k)]
        _values(pooling["task"], tasks)
        if pooling["task"].get("default") not in tasks:
            _required(schemas["PoolingRequest"], "task")
        if SPARSE not in kinds:
            _values(pooling["max_active_dims"], [])


def _one_label(s: Served) -> bool:
    return s.kind != CROSS_ENCODER or len(s.labels or ()) == 1


def _drop(doc: dict, schema_name: str) -> None:
    ref = f"#/components/schemas/{schema_name}"
    for path in list(doc["paths"]):
        ops = doc["paths"][path]
        for method in list(ops):
            body = ops[method].get("requestBody", {}).get("content", {}).get("application/json", {})
            if body.get("schema", {}).get("$ref") == ref:
                del ops[method]
        if not ops:
            del doc["paths"][path]


def _token_ids(prop: dict, embedder: Served | None, st: State) -> None:
    """Token ids run on the embedding model's packed engine only, and must be in its vocabulary."""
    takes_ids = embedder is not None and st.bridge.engine_reason(embedder) is None
    kept = []
    for member in _members(prop):
        items = member.get("items", {})
        ids = items if items.get("type") == "integer" else items.get("items", {})
        if member.get("type") == "array" and ids.get("type") == "integer":
            if not takes_ids:
                continue
            ids["maximum"] = embedder.vocab_size - 1
        kept.append(member)
    prop["anyOf"] = kept


def _dimensions(prop: dict, embedder: Served) -> None:
    """Bridge.check_dimensions: the full size, the declared Matryoshka sizes, or any prefix when all were trained."""
    full, mat = embedder.dimension, embedder.model.matryoshka
    if mat.any_prefix:
        prop["anyOf"] = [{"type": "integer", "minimum": 1, "maximum": full}, {"type": "null"}]
    else:
        _values(prop, sorted({full, *(d for d in mat.dimensions or () if d <= full)}))
