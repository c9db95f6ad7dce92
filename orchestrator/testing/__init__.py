"""Testing your workflows: ``run_inline`` (in-process, on in-memory twins) and a pytest plugin
for tests against a real worker."""
