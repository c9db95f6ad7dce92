"""An example document ingestion: list the documents, then per document (a child workflow)
parse, chunk and embed each chunk, and build an index of it all.

Used by ``config/workflows/ingest.yaml`` and ``ingest_document.yaml``. The documents are
generated from the source name so the example runs anywhere; swap the bodies for real I/O.
"""

from __future__ import annotations

import hashlib
from typing import Any

from orchestrator import current_run, task

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


@task
def list_documents(source: str, count: int = 4) -> list[dict[str, Any]]:
    """The documents at ``source`` (here: ``count`` generated ones)."""
    return [
        {"doc_id": f"{source}/{i}", "text": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(9))}
        for i in range(count)
    ]


@task
def parse(doc_id: str, text: str) -> dict[str, Any]:
    """One document's text, normalized."""
    return {"doc_id": doc_id, "words": text.lower().split()}


@task
def chunk(document: dict[str, Any], size: int = 3) -> list[dict[str, Any]]:
    """The document cut into chunks of ``size`` words."""
    words = document["words"]
    return [
        {"doc_id": document["doc_id"], "text": " ".join(words[i : i + size])}
        for i in range(0, len(words), size)
    ]


@task
def embed(piece: dict[str, Any]) -> dict[str, Any]:
    """A (toy) embedding of one chunk; ``current_run.item_index`` is its place in the document."""
    digest = hashlib.sha256(piece["text"].encode()).digest()
    vector = [round(b / 255, 3) for b in digest[:4]]
    return {"doc_id": piece["doc_id"], "chunk": current_run.item_index, "vector": vector}


@task
def build_index(documents: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The index of every chunk of every document."""
    entries = [entry for document in documents for entry in document]
    return {"documents": len(documents), "chunks": len(entries)}


@task
def alert(failure: dict[str, Any]) -> None:
    """Called once when an ingestion run fails (the workflow's ``on_failure``)."""
    print(f"ingestion run {failure['run_id']} failed at {failure['step']}: {failure['error']}")
