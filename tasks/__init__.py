"""Example task modules; the worker imports ``tasks`` (ORCHESTRATOR_TASK_MODULES) by default."""

from tasks import etl

__all__ = ["etl"]
