"""Celery's JSON for results, in Redis and in PostgreSQL."""

from __future__ import annotations

import datetime
import decimal
import uuid

from orchestrator.codec import Encoded, decode, encode, for_postgres, text_for_postgres

VALUE = {
    "at": datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC),
    "amount": decimal.Decimal("1.50"),
    "id": uuid.UUID(int=7),
    "text": "a\x00b",
    "escaped": "\\u0000",
}


def test_typed_values_round_trip() -> None:
    assert decode(encode(VALUE)) == VALUE


def test_an_encoded_value_is_not_encoded_again_and_loses_its_nul_the_same_way() -> None:
    assert for_postgres(Encoded(encode(VALUE))) == for_postgres(VALUE)
    assert decode(for_postgres(VALUE))["text"] == "a\ufffdb"
    assert decode(for_postgres(VALUE))["escaped"] == "\\u0000"


def test_text_columns_lose_nul() -> None:
    assert text_for_postgres("x\x00y") == "x\ufffdy" and text_for_postgres(None) is None
