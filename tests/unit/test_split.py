"""The out-of-time split never leaks: periods are ordered, gaps empty, late labels kept out of training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.train import Split, assign_periods, make_split

D0 = pd.Timestamp("2025-01-01", tz="UTC")


def day(x: float) -> pd.Timestamp:
    return D0 + pd.Timedelta(days=x)


def test_constructed_case_respects_periods_gaps_and_label_delay() -> None:
    split = Split(day(0), day(10), day(13), day(20), day(23), day(30), cutoff=day(60))
    rows = pd.DataFrame(
        [
            # (event day, label day, expected period)
            (-0.5, 1, ""),  # before training starts (warm-up)
            (0, 1, "train"),  # start is inclusive
            (9.99, 12, "train"),
            (9.999, 24, ""),  # label known only after the model is built: not a training row
            (10, 11, ""),  # train end is exclusive: in the gap
            (12.9, 13, ""),  # gap
            (13, 14, "valid"),
            (19.9, 22.9, "valid"),
            (19.9, 23.5, ""),  # validation label not known on the build day
            (20, 21, ""),  # second gap
            (23, 40, "test"),  # test labels: anything known at the cutoff
            (29.9, 59, "test"),
            (29.9, 61, ""),  # label after the cutoff
            (30, 31, ""),  # test end is exclusive
        ],
        columns=["event", "label", "expected"],
    )
    got = assign_periods(rows["event"].map(day), rows["label"].map(day), split)
    assert list(got) == list(rows["expected"])


def test_no_row_crosses_the_gaps_on_random_data() -> None:
    rng = np.random.default_rng(0)
    events = pd.Series(D0 + pd.to_timedelta(rng.uniform(0, 60, 5000), unit="D"))
    labels = events + pd.to_timedelta(rng.lognormal(1.5, 1.0, 5000), unit="D")
    split = make_split(events.min(), events.max(), labels.max(), gap_days=5, warmup_days=3)
    period = assign_periods(events, labels, split)
    by = {p: events[period == p] for p in ("train", "valid", "test")}
    gap = pd.Timedelta(days=5)
    assert by["train"].max() + gap <= by["valid"].min()
    assert by["valid"].max() + gap <= by["test"].min()
    assert by["train"].min() >= D0 + pd.Timedelta(days=3)
    # nothing used to fit the model was labelled after the model would have been built
    assert (labels[np.isin(period, ["train", "valid"])] <= split.test_start).all()
    assert split.test_end > events.max()


def test_explicit_dates_win_and_bad_orders_are_refused() -> None:
    split = make_split(
        day(0),
        day(59),
        day(90),
        gap_days=2,
        train_start=day(5).to_pydatetime(),
        train_end=day(30).to_pydatetime(),
        test_start=day(45).to_pydatetime(),
        test_end=day(55).to_pydatetime(),
    )
    assert (split.train_start, split.train_end, split.valid_start, split.valid_end) == (
        day(5),
        day(30),
        day(32),
        day(43),
    )
    assert (split.test_start, split.test_end) == (day(45), day(55))
    with pytest.raises(ValueError):
        Split(day(0), day(10), day(9), day(20), day(23), day(30), cutoff=day(60))  # train overlaps validation
    with pytest.raises(ValueError):
        make_split(day(0), day(10), day(10), gap_days=7, warmup_days=7)  # too short
