"""Feast used through its public API only: product code names nothing private of Feast's, so an
upgrade within the pinned range cannot break it silently (`feature_repo`, `fraud`, `services`,
`pipelines`, `models`, `data_quality`)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("feature_repo", "fraud", "services", "pipelines", "models", "data_quality")
# A private Feast import, or a private member of a Feast object the code holds (store, provider,
# online store, config): the names the scorer and ingest used to reach for, and the pattern behind them.
PRIVATE_IMPORT = re.compile(r"from feast[\w.]* import [^\n]*\b_[a-z]\w*")
PRIVATE_MEMBER = re.compile(r"\b(?:store|provider|online_store|feast|config)\._[a-z]\w*")
KNOWN = re.compile(r"\b(?:_get_provider|_table_id|_quote_id|_get_conn|_get_db_path)\b")


def test_no_private_feast_names_in_product_code() -> None:
    found = []
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if PRIVATE_IMPORT.search(line) or PRIVATE_MEMBER.search(line) or KNOWN.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "private Feast names in product code:\n" + "\n".join(found)


def test_the_check_bites() -> None:
    for line in (
        "from feast.infra.online_stores.sqlite import _quote_id, _table_id",
        "online = store._get_provider().online_store",
        "conn = online_store._get_conn(config)",
    ):
        assert PRIVATE_IMPORT.search(line) or PRIVATE_MEMBER.search(line) or KNOWN.search(line)
    assert not PRIVATE_MEMBER.search("self._store = store")
