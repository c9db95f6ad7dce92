"""The document-ingestion example of config/workflows (for_each, a child run per document, a
map inside the child, a condition), run inline."""

from __future__ import annotations

from pathlib import Path

from orchestrator.settings import Settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing import run_inline

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = Settings(task_modules=["tasks"], workflows_path=str(ROOT / "config" / "workflows"))


def test_the_ingestion_example_indexes_every_chunk_of_every_document() -> None:
    run = run_inline("ingest", {"source": "s3://docs", "count": 3}, settings=SETTINGS)

    assert run.wait() == {"documents": 3, "chunks": 9}
    children = run.children()
    assert [c.record().parent_step_id for c in children] == [
        "documents[0]",
        "documents[1]",
        "documents[2]",
    ]
    embed = {s.step_id: s for s in children[0].steps()}
    assert [embed[f"embed[{i}]"].result["chunk"] for i in range(3)] == [0, 1, 2]


def test_no_documents_skip_the_index() -> None:
    run = run_inline("ingest", {"source": "s3://empty", "count": 0}, settings=SETTINGS)

    assert run.status() == RunStatus.SUCCEEDED
    assert {s.step_id: s.status for s in run.steps()}["index"] == StepStatus.SKIPPED
