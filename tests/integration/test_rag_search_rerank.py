"""The cross-encoder rerank stage, with a tiny random BERT cross-encoder built here.

No reranker weights ship offline, so the test saves a tiny randomly initialised
BERT classifier and its vocabulary to a folder; sentence-transformers' CrossEncoder
loads it like any local model. Scores are meaningless, but the code path is real:
a rag process with ``QUARRY_RAG_RERANK_MODEL`` set must return hits in the order of
the model's own scores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.suite import Child, Suite, free_port
from services.common.http_client import create_http2_client
from services.common.milvus_connect import connect_milvus
from services.rag.retrieval.reranker import Reranker
from services.rag.retrieval.retriever import Hit

WORDS = ["granite", "rock", "magma", "bread", "yeast", "violin", "strings", "penguins", "swim", "the", "is"]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        # Wider than BERT's 0.02 so the random model's scores differ visibly between inputs.
        initializer_range=0.2,
    )
    config.num_labels = 1  # one relevance logit, as CrossEncoder expects
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    return str(folder)


def _hit(n: int, text: str) -> Hit:
    return Hit(f"c{n}", f"d{n}", 0, text, "t", "s", {}, 0.0)


async def test_reranker_orders_by_the_models_scores(tiny_cross_encoder: str) -> None:
    from sentence_transformers import CrossEncoder

    texts = ["granite is rock", "bread yeast", "violin strings", "penguins swim", "magma rock"]
    hits = [_hit(i, t) for i, t in enumerate(texts)]
    reranked = await Reranker(tiny_cross_encoder).rerank("granite magma", hits)

    expected = CrossEncoder(tiny_cross_encoder, device="cpu").predict([("granite magma", t) for t in texts])
    order = sorted(range(len(texts)), key=lambda i: -float(expected[i]))
    assert len(set(expected.tolist())) == len(texts)  # distinct scores: the order is well defined
    assert [h.chunk_id for h in reranked] == [f"c{i}" for i in order]
    assert [h.score for h in reranked] == pytest.approx([float(expected[i]) for i in order], abs=1e-5)
    assert await Reranker(tiny_cross_encoder).rerank("q", []) == []


@pytest.fixture(scope="module")
def reranking_rag(suite: Suite, tiny_cross_encoder: str) -> Iterator[str]:
    port = free_port()
    env = {
        **suite.service_env(),
        "QUARRY_RAG_PORT": str(port),
        "QUARRY_RAG_RERANK_MODEL": tiny_cross_encoder,
        "QUARRY_RAG_RERANK_DEPTH": "6",
    }
    child = Child(
        "rag-rerank",
        [*suite.children["rag"].argv],
        env,
        f"http://127.0.0.1:{port}/health/ready",
        Path(suite.data_dir) / "logs" / "rag-rerank.log",
    )
    child.start()
    suite.children["rag-rerank"] = child
    try:
        suite.wait_ready("rag-rerank", time.monotonic() + 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.stop()
        del suite.children["rag-rerank"]


async def test_search_reranks_through_the_service(
    reranking_rag: str, suite: Suite, tiny_cross_encoder: str
) -> None:

    from services.common import vector_schema as vs
    from services.common.embeddings_client import EmbeddingsClient

    texts = ["granite is rock", "bread yeast", "violin strings", "penguins swim", "magma rock", "the rock"]
    embeddings = EmbeddingsClient(suite.url("embedder"))
    vectors = await embeddings.embed(texts)
    await embeddings.aclose()
    name = "t_search_rerank"
    client = connect_milvus(suite.milvus_uri)
    if client.has_collection(name):
        client.drop_collection(name)
    client.create_collection(
        name, schema=vs.build_schema(len(vectors[0])), index_params=vs.build_index_params(client)
    )
    client.insert(
        name,
        [
            vs.with_lexical(
                {
                    vs.CHUNK_ID: f"c{i}",
                    vs.DOC_ID: f"d{i}",
                    vs.DOC_HASH: "h",
                    vs.CHUNK_INDEX: 0,
                    vs.TEXT: t,
                    vs.TITLE: "",
                    vs.SOURCE: "s",
                    vs.METADATA: {},
                    vs.DENSE: v,
                }
            )
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ],
    )
    try:
        async with create_http2_client(reranking_rag) as http:
            response = await http.post(
                "/v1/search",
                json={"query": "granite magma rock", "collection": name, "top_k": 3, "mode": "dense"},
            )
            plain = await http.post(
                "/v1/search",
                json={
                    "query": "granite magma rock",
                    "collection": name,
                    "top_k": 3,
                    "mode": "dense",
                    "rerank": False,
                },
            )
    finally:
        client.drop_collection(name)
        client.close()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reranked"] is True and "rerank" in body["timings_ms"]
    # The service's order is the cross-encoder's order over all six candidates (rerank depth 6).
    from sentence_transformers import CrossEncoder

    scores = CrossEncoder(tiny_cross_encoder, device="cpu").predict(
        [("granite magma rock", t) for t in texts]
    )
    best = sorted(range(len(texts)), key=lambda i: -float(scores[i]))[:3]
    assert [h["doc_id"] for h in body["hits"]] == [f"d{i}" for i in best]
    assert plain.status_code == 200 and plain.json()["reranked"] is False
