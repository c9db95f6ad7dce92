"""Testing your workflows: ``run_inline`` (in-process, on in-memory twins) and a pytest plugin
for tests against a real worker."""

from orchestrator.testing.inline import run_inline

__all__ = ["run_inline"]
