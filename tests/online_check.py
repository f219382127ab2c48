"""What the ingest tests assert about the online store: it serves what training computes from the history.

The online rows an ingest leaves (each entity's state) are read back through the scorer's reader and
finished at request instants after the end of the history; the result must equal
`fraud.aggregates.features_at` over the same events (the backfill's and training's computation)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraud import aggregates as A
from fraud import store as S
from fraud.contracts import Transaction
from fraud.settings import FeatureStoreSettings


def after_the_end(events: pd.DataFrame, gap: pd.Timedelta = pd.Timedelta(hours=1)) -> pd.DataFrame:
    """One request per user: its last transaction again, `gap` after the end of the history."""
    last = events.sort_values("event_time").groupby("user_id", sort=True).tail(1).reset_index(drop=True)
    end = pd.to_datetime(events["event_time"], utc=True).max()
    return last.assign(event_time=end + gap, transaction_id=[f"after-{i}" for i in range(len(last))])


def served(settings: FeatureStoreSettings, queries: pd.DataFrame) -> pd.DataFrame:
    """Every entity feature the scorer computes for `queries` from the online store."""
    from services.scorer.core import stored_columns, transaction_columns
    from services.scorer.online import OnlineFeatureReader

    requests = [Transaction.model_validate(r) for r in queries.to_dict("records")]
    reader = OnlineFeatureReader(S.open_store(settings), timeout_s=30, retry_s=1)
    try:
        columns = stored_columns(reader.read(requests), transaction_columns(requests))
    finally:
        reader.close()
    return pd.DataFrame({k: v for k, v in columns.items()}, index=queries.index)


def assert_serves_the_history(
    settings: FeatureStoreSettings, events: pd.DataFrame, labels: pd.DataFrame | None = None
) -> int:
    """The online store serves, for a request of every user an hour after the end, exactly what training
    computes over `events` (and `labels`); returns the number of requests checked."""
    queries = after_the_end(events)
    got = served(settings, queries)
    want = A.features_at(events, labels, queries)
    for name in want.columns:
        if want[name].dtype.kind == "M":
            assert list(pd.to_datetime(got[name], utc=True)) == list(want[name]), name
        else:
            # rtol: the spread of a window is E[x^2] - E[x]^2 from running sums, noisy where it is nil
            got_values, want_values = got[name].to_numpy(float), want[name].to_numpy(float)
            np.testing.assert_allclose(got_values, want_values, rtol=1e-6, atol=1e-6, err_msg=name)
    assert want["txn_count_total"].notna().all()
    return len(queries)
