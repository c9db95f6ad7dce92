"""An example ETL: extract rows, clean and profile them in parallel, load, then report.

Used by ``config/workflows/etl.yaml``. The data is generated from the source name so the example
runs anywhere; swap the bodies for real I/O.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from orchestrator import current_run, task


@task
def extract(source: str, rows: int = 200) -> list[dict[str, Any]]:
    """Read rows from ``source`` (here: generated deterministically from its name)."""
    seed = int(hashlib.sha256(source.encode()).hexdigest()[:8], 16)
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "region": rng.choice(["eu", "us", "apac"]),
            "amount": round(rng.uniform(-5, 100), 2),
        }
        for i in range(rows)
    ]


@task
def clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop rows with a negative amount."""
    return [r for r in rows if r["amount"] >= 0]


@task
def stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-region totals of the raw rows."""
    totals: dict[str, float] = {}
    for row in rows:
        totals[row["region"]] = round(totals.get(row["region"], 0.0) + row["amount"], 2)
    return {"rows": len(rows), "totals": totals}


@task
def validate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Check the ids are unique."""
    ids = [r["id"] for r in rows]
    return {"unique_ids": len(ids) == len(set(ids)), "checked": len(ids)}


@task
def load(parents: dict[str, Any], table: str = "facts") -> dict[str, Any]:
    """Load the cleaned rows into ``table`` (here: count them), with the profile alongside."""
    rows = parents["clean"]
    return {
        "table": table,
        "loaded": len(rows),
        "raw_rows": parents["stats"]["rows"],
        "run_id": current_run.run_id,
    }


@task
def report(parents: dict[str, Any]) -> str:
    """A one-line summary of the load and the checks."""
    load_result, checks = parents["load"], parents["validate"]
    return (
        f"loaded {load_result['loaded']} of {load_result['raw_rows']} rows into "
        f"{load_result['table']}; ids unique: {checks['unique_ids']}"
    )
