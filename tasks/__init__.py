"""Example task modules; the worker imports ``tasks`` (ORCHESTRATOR_TASK_MODULES) by default."""

from tasks import etl, ingest

__all__ = ["etl", "ingest"]
