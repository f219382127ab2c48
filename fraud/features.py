"""Every feature, implemented once, as pure vectorised code over events (no I/O).

Stored features describe an entity *as of* one of its events, that event included: a row of the
`user` view at time t holds the user's windows over (t - w, t], counting the events ordered up to
this one by (event_time, transaction_id). The batch backfill runs these
functions over a whole history; the streaming ingest runs the same functions over its retained
history plus a micro-batch and keeps the rows of the new events, so both paths produce the same
values by construction. Training joins, for each transaction, the rows strictly before it; the
scorer reads the latest rows online. Request-time features combine those rows with the request
itself (`request_features`), through the same function in training and serving.

All window arithmetic is exact: times are int64 microseconds, compared through a shared rank space,
so no float rounding or overflow decides whether an event falls inside a window.

Label-derived risk of a counterparty at its event t, over a window w:
- `*_fraud_count_<w>`: fraud labels on the entity's transactions whose `label_time` is in (t - w, t],
  whenever the transaction was: how recently confirmations arrived.
- `*_fraud_rate_<w>`: of the entity's transactions in the window (those counted by its activity),
  the share confirmed fraud by t (label_time <= t), smoothed towards a prior:
  (confirmed + PRIOR_RATE * PRIOR_WEIGHT) / (transactions + PRIOR_WEIGHT). Always within [0, 1].

Balances (`balance_<asset>`) are the user's net flow per asset since first seen, both legs of a trade
posted as the exchange's ledger posts them (`balance_postings`); opening balances are in no canonical
table, so they are not included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraud.contracts import Asset, TransactionType

US = 1_000_000  # microseconds per second
WINDOWS: dict[str, int] = {"1h": 3600 * US, "24h": 86400 * US, "7d": 7 * 86400 * US, "30d": 30 * 86400 * US}
SHORT_WINDOWS: dict[str, int] = {k: WINDOWS[k] for k in ("24h", "7d")}
RISK_WINDOWS: dict[str, int] = {k: WINDOWS[k] for k in ("7d", "30d")}
TYPES: tuple[str, ...] = tuple(t.value for t in TransactionType)
ASSETS: tuple[str, ...] = tuple(a.value for a in Asset)
OUTGOING = ("withdrawal", "sell", "send")
DISTINCT_USER_FIELDS = {
    "devices": "device_id",
    "ips": "ip_address",
    "countries": "country",
    "dest_addresses": "destination_address",
}
KNOWN_SETS = {
    "devices": "new_device",
    "ips": "new_ip",
    "countries": "new_country",
    "dest_addresses": "new_dest_address",
}
SEP = "|"
RATIO_CAP = 1e6  # request-time ratios (amount to mean or balance, z-score) are bounded to +-this
KNOWN_CAP = 64  # most recent distinct values kept per set
CASH = Asset.USDC.value  # the exchange's cash leg: sells settle in it, balance-funded buys spend from it
COUNTERPARTIES = {"address": "destination_address", "device": "device_id", "ip": "ip_address"}
LIST_NAMES = ("sanctions", "mixer")
# Fraud-rate smoothing (`counterparty_features`): the rate starts from a prior of PRIOR_RATE, worth
# PRIOR_WEIGHT transactions. 1% is the exchange's base fraud rate per transaction (the simulator's
# default); a weight of one transaction keeps a single confirmed fraud loud (1 of 1 reads ~0.5, not
# 1.0) while ten transactions already outweigh the prior ten to one.
PRIOR_RATE = 0.01
PRIOR_WEIGHT = 1.0


# ---------------------------------------------------------------------------------------------
# Feature names (the Feast repository and the model read these lists; nothing else defines them).


def user_feature_names() -> list[str]:
    names: list[str] = []
    for w in WINDOWS:
        names += [f"txn_count_{w}", f"usd_sum_{w}"]
        for t in TYPES:
            names += [f"{t}_count_{w}", f"{t}_usd_{w}"]
        names += [f"distinct_{d}_{w}" for d in DISTINCT_USER_FIELDS]
    names += ["usd_mean_30d", "usd_std_30d", "last_event_time", "txn_count_total"]
    names += [f"known_{name}_30d" for name in KNOWN_SETS]
    names += [f"balance_{a}" for a in ASSETS]
    return names


def counterparty_feature_names(kind: str) -> list[str]:
    names = [f"{kind}_txn_count_{w}" for w in SHORT_WINDOWS]
    names += [f"{kind}_distinct_users_{w}" for w in SHORT_WINDOWS]
    names += [f"{kind}_first_seen"]
    for w in RISK_WINDOWS:
        names += [f"{kind}_fraud_count_{w}", f"{kind}_fraud_rate_{w}"]
    return names


ACCOUNT_FEATURES = ["signup_time", "kyc_tier"]
ADDRESS_LIST_FEATURES = [f"on_{n}_list" for n in LIST_NAMES]

REQUEST_FEATURES = [
    "amount_usd",
    "log_amount_usd",
    "type_code",
    "asset_code",
    "payment_method_code",
    "channel_code",
    "hour_of_day",
    "day_of_week",
    "is_outgoing",
    "is_onchain",
    "new_device",
    "new_ip",
    "new_country",
    "new_dest_address",
    "seconds_since_prev_txn",
    "account_age_days",
    "amount_z_30d",
    "amount_to_mean_30d",
    "balance_share_leaving",
    "address_age_days",
    "device_age_days",
    "ip_age_days",
]

CATEGORY_CODES: dict[str, dict[str, int]] = {
    "type": {v: i for i, v in enumerate(TYPES)},
    "asset": {v: i for i, v in enumerate(ASSETS)},
    "payment_method": {v: i for i, v in enumerate(("card", "bank_transfer", "crypto", "balance"))},
    "channel": {v: i for i, v in enumerate(("web", "ios", "android", "api"))},
}


# ---------------------------------------------------------------------------------------------
# Window primitives over rows sorted by (group, time, order).


def to_micros(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch."""
    # `to_datetime` only when needed: on a column that already is datetimes it samples them first
    s = ts if isinstance(ts.dtype, pd.DatetimeTZDtype) else pd.to_datetime(ts, utc=True)
    return np.asarray(s.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64"), dtype=np.int64)


def from_micros(us: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(us, unit="us", utc=True, cache=False))


@dataclass(frozen=True)
class _Ranker:
    """Maps int64 times into a dense rank space shared by every value compared in one computation."""

    values: np.ndarray

    @classmethod
    def of(cls, *arrays: np.ndarray) -> _Ranker:
        # stable sort merges the ascending runs callers pass; sort + dedupe beats np.unique
        values = np.sort(np.concatenate([a.astype(np.int64) for a in arrays]), kind="stable")
        return cls(values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.values, a).astype(np.int64)

    @property
    def span(self) -> int:
        return len(self.values) + 1


@dataclass(frozen=True)
class _Groups:
    """Rows sorted by (group, time, order), searchable by (group, time) for every window width given.

    Ranks are looked up in time order (`time_rank`): ascending queries make the binary searches cheap.
    """

    g: np.ndarray
    t: np.ndarray
    in_time: np.ndarray  # row i is the in_time[i]-th event in time order
    rank: _Ranker
    key: np.ndarray  # g * span + rank(t), ascending
    first: np.ndarray  # the row starts its group
    group_start: np.ndarray  # position of the first row of the row's group

    @classmethod
    def of(cls, g: np.ndarray, t: np.ndarray, in_time: np.ndarray, widths: list[int]) -> _Groups:
        ascending = np.empty_like(t)
        ascending[in_time] = t
        rank = _Ranker.of(ascending, *(ascending - w for w in widths), *(ascending + w for w in widths))
        n = len(t)
        first = np.r_[True, g[1:] != g[:-1]] if n else np.zeros(0, dtype=bool)
        group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
        key = g * rank.span + rank(ascending)[in_time]
        return cls(g, t, in_time, rank, key, first, group_start)

    def _search(self, shift: int, side: Any) -> np.ndarray:
        ascending = np.empty_like(self.t)
        ascending[self.in_time] = self.t + shift
        query = self.g * self.rank.span + self.rank(ascending)[self.in_time]
        return np.searchsorted(self.key, query, side=side).astype(np.int64)

    def window_start(self, width: int) -> np.ndarray:
        """First row j of the row's group with t_j > t_i - w: the window of row i is rows [start, i]."""
        return self._search(-width, "right")

    def window_leave(self, width: int) -> np.ndarray:
        """First row k of the row's group (or the next group's first row) with t_k >= t_i + w."""
        return self._search(width, "left")


def _group_cumsum(columns: dict[str, np.ndarray], g: np.ndarray) -> np.ndarray:
    """Running sums that restart at each group, for several columns in one pass (rows x columns).

    Restarting keeps the float error proportional to the entity's own history, not to the whole
    table's, so the stream (recent history) and the backfill (all history) agree to ~1e-15.
    """
    sums = pd.DataFrame(columns, dtype="float64").groupby(g, sort=False).cumsum()
    return np.ascontiguousarray(sums.to_numpy())


def _window_sums(cs: np.ndarray, start: np.ndarray, groups: _Groups) -> np.ndarray:
    """Sums over rows [start, i] of one group, from the group's running sums `cs` (rows x columns)."""
    inside = (start > groups.group_start)[:, None]
    return cs - np.where(inside, cs[np.maximum(start - 1, 0)], 0.0)


def _next_repeat(g: np.ndarray, v: np.ndarray, present: np.ndarray) -> np.ndarray:
    """For each present row, the next row of the same group with the same value (n when none)."""
    n = len(g)
    idx = np.flatnonzero(present)
    by_value = idx[np.argsort(g[idx] * (int(v.max(initial=0)) + 1) + v[idx], kind="stable")]
    repeat = np.full(n, n, dtype=np.int64)
    gs, vs = g[by_value], v[by_value]
    same = (gs[1:] == gs[:-1]) & (vs[1:] == vs[:-1])
    repeat[by_value[:-1][same]] = by_value[1:][same]
    return repeat


def _window_distinct(groups: _Groups, present: np.ndarray, repeat: np.ndarray, leave: np.ndarray) -> np.ndarray:
    """Distinct values (where present) among the rows of each row's window.

    Each present row j covers the rows from itself up to (not including) the first row that either
    repeats its value or is past its window (`leave`); the distinct count at row i is the number of
    covering rows: (rows of the group started by i) - (rows whose cover ended by i).
    """
    n = len(present)
    started = np.cumsum(present)
    started = started - (started - present)[groups.group_start]
    ends = np.minimum(leave, repeat)[present]
    ended = np.cumsum(np.bincount(ends, minlength=n + 1))[:n]
    ended = ended - ended[groups.group_start]
    return (started - ended).astype(np.int64)


def _window_confirmed(groups: _Groups, rows: np.ndarray, confirmed_at: np.ndarray, width: int) -> np.ndarray:
    """Per row i: how many rows j of its window [start_i, i] were confirmed fraud at or before t_i.

    `rows` are the positions of the confirmed rows and `confirmed_at` their (earliest) label times.
    A confirmed row j counts for the rows of its group from the later of itself and the first row at
    or after its label time, up to (not including) the first row its window no longer reaches
    (`window_leave`): an interval per label, summed with one difference array, so the cost is the
    rows plus the labels, whatever the windows hold.
    """
    n = len(groups.t)
    if not len(rows):
        return np.zeros(n, dtype=np.int64)
    # first row of j's group with t >= label time (rank(t) >= rank(label) iff t >= label: t is ranked)
    known_from = np.searchsorted(groups.key, groups.g[rows] * groups.rank.span + groups.rank(confirmed_at), "left")
    lo = np.maximum(rows, known_from)
    hi = groups.window_leave(width)[rows]
    live = lo < hi
    diff = np.bincount(lo[live], minlength=n + 1) - np.bincount(hi[live], minlength=n + 1)
    return np.cumsum(diff[:n]).astype(np.int64)


def _recent_text(window: list[str]) -> str:
    """The KNOWN_CAP most recently seen distinct values of a window (in row order), sorted, joined."""
    return SEP.join(sorted(list(dict.fromkeys(reversed(window)))[:KNOWN_CAP]))


def _known_sets(
    groups: _Groups, values: np.ndarray, present: np.ndarray, repeat: np.ndarray, width: int, distinct: np.ndarray
) -> np.ndarray:
    """Per row: the group's distinct values in its window (at most KNOWN_CAP, the most recently seen).

    The text is built only at rows where the set can change (the group's first row, a value new to
    the window, a value leaving it, a set over the cap) and carried forward to the other rows.
    """
    n = len(values)
    pos = np.arange(n)
    leave = groups.window_leave(width)
    idx = np.flatnonzero(present)
    prev = np.full(n, -1, dtype=np.int64)
    repeated = repeat[idx] < n
    prev[repeat[idx][repeated]] = idx[repeated]
    added = present & ((prev < 0) | (leave[np.maximum(prev, 0)] <= pos))
    left = np.zeros(n + 1, dtype=bool)
    left[leave[idx][leave[idx] < repeat[idx]]] = True
    capped = distinct > KNOWN_CAP
    change = groups.first | added | left[:n] | capped | np.r_[False, capped[:-1]]
    seen = np.cumsum(present)
    lo = (seen - present)[groups.window_start(width)]
    vals = list(map(str, values[idx]))
    texts = np.empty(n, dtype=object)
    at = np.flatnonzero(change & ~capped)
    texts[at] = [SEP.join(sorted(set(vals[a:b]))) for a, b in zip(lo[at].tolist(), seen[at].tolist(), strict=True)]
    at = np.flatnonzero(capped)
    texts[at] = [_recent_text(vals[a:b]) for a, b in zip(lo[at].tolist(), seen[at].tolist(), strict=True)]
    return texts[np.maximum.accumulate(np.where(change, pos, 0))] if n else texts


def _codes(*series: pd.Series) -> list[np.ndarray]:
    """Factorize several series into one shared integer code space (missing values get -1)."""
    joined = pd.concat(series, ignore_index=True)
    codes, _ = pd.factorize(joined, use_na_sentinel=True)
    out, pos = [], 0
    for s in series:
        out.append(codes[pos : pos + len(s)].astype(np.int64))
        pos += len(s)
    return out


# ---------------------------------------------------------------------------------------------
# Entity feature rows.


def balance_postings(events: pd.DataFrame) -> np.ndarray:
    """What each event moves on its user's balances: (events x ASSETS) signed amounts, in row order.

    Posted as the exchange's ledger posts them (`pipelines/simulator/ledger.py`): every event moves
    its own asset (deposits, buys and receives credit it; withdrawals, sells and sends debit it), and
    a trade has a cash leg in USDC (priced at $1): a sell credits its `amount_usd` of proceeds, a
    buy paid from the balance (`payment_method` "balance") spends its `amount_usd`. A card or bank
    buy is paid outside the exchange (no cash leg); a card or bank deposit is itself a USDC credit.
    The one rule for the running balances (`user_features`) and the streaming carry (`FeatureState`).
    """
    types = events["type"].to_numpy()
    assets = events["asset"].to_numpy()
    amount = events["amount"].to_numpy(dtype=np.float64)
    usd = events["amount_usd"].to_numpy(dtype=np.float64)
    own = np.where(np.isin(types, OUTGOING), -amount, amount)
    cash = np.where(types == "sell", usd, 0.0)
    cash = np.where((types == "buy") & (events["payment_method"].to_numpy() == "balance"), -usd, cash)
    out = np.empty((len(events), len(ASSETS)))
    for j, a in enumerate(ASSETS):
        out[:, j] = np.where(assets == a, own, 0.0) + (cash if a == CASH else 0.0)
    return out


def _grouped(events: pd.DataFrame, key: str, widths: list[int]) -> tuple[np.ndarray, _Groups]:
    """The events that have `key`, ordered by (key, event_time, transaction_id).

    Returns their positions in `events` and their groups (numbered by first appearance in time),
    searchable over the window `widths`.
    """
    t = to_micros(events["event_time"])
    ids = pa.array(events["transaction_id"], type=pa.string())
    by_time = pc.sort_indices(pa.table({"t": t, "id": ids}), sort_keys=[("t", "ascending"), ("id", "ascending")])
    order = by_time.to_numpy()
    order = order[events[key].notna().to_numpy()[order]]
    (g,) = _codes(pd.Series(events[key].to_numpy()[order]))
    regroup = np.argsort(g, kind="stable")
    rows = order[regroup]
    return rows, _Groups.of(g[regroup], t[rows], regroup, widths)


def user_features(events: pd.DataFrame, carry: pd.DataFrame | None = None) -> pd.DataFrame:
    """One `user` row per event: windows by type, distinct counts, 30d spread, balances, last event.

    `balance_<ASSET>` is the user's net flow of the asset since first seen, both legs of buys and
    sells posted (`balance_postings`); it does not include opening balances (no canonical table holds
    them), so a user who brought funds before the history can read below zero.
    `carry` (indexed by user_id) holds what the rows before `events` contributed to the running
    totals (`txn_count_total`, `balance_<ASSET>`); the streaming path passes it, the backfill not.
    """
    at, groups = _grouped(events, "user_id", list(WINDOWS.values()))
    g, t, n = groups.g, groups.t, len(at)

    def column(name: str, dtype: Any = None) -> np.ndarray:
        return events[name].to_numpy(dtype=dtype)[at]

    usd = column("amount_usd", np.float64)
    types = column("type")
    summed = {"usd": usd, "usd_sq": usd * usd}
    for typ in TYPES:
        is_t = (types == typ).astype(np.float64)
        summed |= {f"{typ}_n": is_t, f"{typ}_usd": usd * is_t}
    cs = _group_cumsum(summed, g)
    col_of = {name: j for j, name in enumerate(summed)}
    values = {name: column(col) for name, col in DISTINCT_USER_FIELDS.items()}
    codes = {name: _codes(pd.Series(v))[0] for name, v in values.items()}
    repeats = {name: _next_repeat(g, v, v >= 0) for name, v in codes.items()}
    out: dict[str, Any] = {}
    known: dict[str, np.ndarray] = {}
    for w, width in WINDOWS.items():
        start = groups.window_start(width)
        leave = groups.window_leave(width)
        out[f"txn_count_{w}"] = (np.arange(1, n + 1) - start).astype(np.int64)
        sums = _window_sums(cs, start, groups)
        out[f"usd_sum_{w}"] = sums[:, col_of["usd"]]
        for typ in TYPES:
            out[f"{typ}_count_{w}"] = np.rint(sums[:, col_of[f"{typ}_n"]]).astype(np.int64)
            out[f"{typ}_usd_{w}"] = sums[:, col_of[f"{typ}_usd"]]
        for name in DISTINCT_USER_FIELDS:
            present = codes[name] >= 0
            out[f"distinct_{name}_{w}"] = _window_distinct(groups, present, repeats[name], leave)
            if w == "30d":
                distinct = out[f"distinct_{name}_{w}"]
                known[f"known_{name}_30d"] = _known_sets(groups, values[name], present, repeats[name], width, distinct)
        if w == "30d":
            sq = sums[:, col_of["usd_sq"]]
            cnt = out["txn_count_30d"].astype(np.float64)
            mean = out["usd_sum_30d"] / cnt
            out["usd_mean_30d"] = mean
            var = np.where(cnt > 1, sq / cnt - mean * mean, 0.0)
            # E[x^2] - E[x]^2 from running sums: clamp the float noise left where the spread is nil
            out["usd_std_30d"] = np.sqrt(np.where(var > 1e-9 * mean * mean, var, 0.0))
    out["last_event_time"] = t
    # Running totals over all history (plus what came before, from `carry`).
    first_of_group = groups.first
    group_id = np.cumsum(first_of_group) - 1
    users = column("user_id")

    def running(x: np.ndarray, carry_col: str) -> np.ndarray:
        cs = np.cumsum(x)
        base = cs[first_of_group] - x[first_of_group]
        result = cs - base[group_id]
        if carry is not None and carry_col in carry:
            prior = pd.Series(users).map(carry[carry_col]).fillna(0.0).to_numpy(dtype=np.float64)
            result = result + prior
        return result

    out["txn_count_total"] = np.rint(running(np.ones(n), "txn_count_total")).astype(np.int64)
    postings = balance_postings(events)[at]
    for j, a in enumerate(ASSETS):
        out[f"balance_{a}"] = running(postings[:, j], f"balance_{a}")
    out["last_event_time"] = from_micros(t)
    # One DataFrame built once from every column: inserting columns afterwards made pandas copy
    # (consolidate) the whole frame again, ~4 s per million rows.
    head = {"user_id": users, "event_timestamp": from_micros(t), "transaction_id": column("transaction_id")}
    return pd.DataFrame(head | out | known)


def counterparty_features(
    events: pd.DataFrame,
    kind: str,
    fraud_labels: pd.DataFrame | None = None,
    carry: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per event that has the counterparty `kind` (address, device or ip).

    Activity over 24h/7d (transactions, distinct users), first-seen time, and label-derived risk over
    7d/30d (see the module doc): `<kind>_fraud_count_<w>` counts fraud labels whose `label_time`
    falls in the window (known by then, never later), whichever transaction they are for;
    `<kind>_fraud_rate_<w>` is the share of the window's transactions confirmed fraud by the row's
    time (label_time <= t), smoothed: (confirmed + PRIOR_RATE * PRIOR_WEIGHT) / (transactions +
    PRIOR_WEIGHT), so within [0, 1], and below PRIOR_RATE while none of them is confirmed. A
    transaction with several fraud labels is confirmed from the earliest.
    `fraud_labels` are labels with their transaction's entities attached (`attach_entities`): a label
    counts for the address, device and IP its transaction used. `carry` (indexed by entity) holds
    `<kind>_first_seen` from before `events` (streaming path); the rate needs no carry, as the
    window's transactions are all retained.
    """
    col = COUNTERPARTIES[kind]
    at, groups = _grouped(events, col, list({**SHORT_WINDOWS, **RISK_WINDOWS}.values()))
    g, t, n = groups.g, groups.t, len(at)
    (u,) = _codes(pd.Series(events["user_id"].to_numpy()[at]))
    everyone = np.ones(n, dtype=bool)
    users_repeat = _next_repeat(g, u, everyone)
    out: dict[str, Any] = {}
    for w, width in SHORT_WINDOWS.items():
        start = groups.window_start(width)
        out[f"{kind}_txn_count_{w}"] = (np.arange(1, n + 1) - start).astype(np.int64)
        leave = groups.window_leave(width)
        out[f"{kind}_distinct_users_{w}"] = _window_distinct(groups, everyone, users_repeat, leave)
    group_id = np.cumsum(groups.first) - 1
    first_seen = t[groups.first][group_id] if n else t
    entities = events[col].to_numpy()[at]
    if carry is not None and f"{kind}_first_seen" in carry and n:
        prior = pd.Series(entities).map(carry[f"{kind}_first_seen"]).to_numpy(dtype="float64")
        first_seen = np.where(np.isnan(prior), first_seen, np.minimum(first_seen, np.nan_to_num(prior)))
        first_seen = first_seen.astype(np.int64)
    out[f"{kind}_first_seen"] = first_seen
    # Label-derived risk: fraud labels attached to this entity (through their transaction).
    lab = None
    if fraud_labels is not None and len(fraud_labels) and n:
        lab = fraud_labels[fraud_labels["is_fraud"].astype(bool) & fraud_labels[col].notna()]
    # Each row's own transaction confirmed as fraud from: its earliest fraud label (none: no row here).
    labelled = np.zeros(0, dtype=np.int64)
    confirmed_at = np.zeros(0, dtype=np.int64)
    if lab is not None and len(lab):
        first_label = pd.Series(to_micros(lab["label_time"]), index=lab["transaction_id"].to_numpy())
        first_label = first_label.groupby(level=0).min()
        known = pd.Series(events["transaction_id"].to_numpy()[at]).map(first_label).to_numpy(dtype=np.float64)
        labelled = np.flatnonzero(~np.isnan(known))
        confirmed_at = known[labelled].astype(np.int64)
    for w, width in RISK_WINDOWS.items():
        counts = np.zeros(n, dtype=np.int64)
        if lab is not None and len(lab):
            gq, gl = _codes(pd.Series(entities), lab[col])
            lt = to_micros(lab["label_time"])
            rank = _Ranker.of(t, t - width, lt)
            lkey = np.sort(gl * rank.span + rank(lt))
            hi = np.searchsorted(lkey, gq * rank.span + rank(t), side="right")
            lo = np.searchsorted(lkey, gq * rank.span + rank(t - width), side="right")
            counts = (hi - lo).astype(np.int64)
        activity = np.arange(1, n + 1) - groups.window_start(width)
        frauds = _window_confirmed(groups, labelled, confirmed_at, width)
        out[f"{kind}_fraud_count_{w}"] = counts
        out[f"{kind}_fraud_rate_{w}"] = (frauds + PRIOR_RATE * PRIOR_WEIGHT) / (activity + PRIOR_WEIGHT)
    out[f"{kind}_first_seen"] = from_micros(out[f"{kind}_first_seen"])
    head = {col: entities, "event_timestamp": from_micros(t), "transaction_id": events["transaction_id"].to_numpy()[at]}
    return pd.DataFrame(head | out)  # built once (see user_features)


def attach_entities(labels: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Labels with the counterparties of their transaction (what label-derived risk is counted on)."""
    cols = ["transaction_id", *COUNTERPARTIES.values()]
    base = labels.drop(columns=[c for c in COUNTERPARTIES.values() if c in labels.columns])
    return base.merge(transactions[cols], on="transaction_id", how="inner")


def account_rows(accounts: pd.DataFrame) -> pd.DataFrame:
    """The `account` view's rows: one per user, timestamped at signup."""
    rows = accounts[["user_id", "signup_time", "kyc_tier"]].copy()
    rows["signup_time"] = pd.to_datetime(rows["signup_time"], utc=True)
    rows["kyc_tier"] = rows["kyc_tier"].astype(np.int64)
    rows["event_timestamp"] = rows["signup_time"]
    return rows


def address_list_rows(address_lists: pd.DataFrame) -> pd.DataFrame:
    """The `address_list` view's rows: at each listing time, the lists the address is on by then."""
    df = address_lists.copy()
    df["listed_time"] = pd.to_datetime(df["listed_time"], utc=True)
    df = df.sort_values(["address", "listed_time"], kind="stable")
    for name in LIST_NAMES:
        df[f"on_{name}_list"] = (df["list_name"] == name).astype(np.int64).groupby(df["address"]).cummax()
    rows = df.groupby(["address", "listed_time"], as_index=False)[ADDRESS_LIST_FEATURES].max()
    rows = rows.rename(columns={"address": "destination_address", "listed_time": "event_timestamp"})
    return rows


# ---------------------------------------------------------------------------------------------
# Request-time features: the request itself joined with the stored rows strictly before it.
#
# Both functions below take "columns": a DataFrame (training, backtests: a million rows) or a dict of
# column name -> 1-D numpy array (the scorer: a handful of requests, where building DataFrames would
# cost more than the features). Times are tz-aware pandas columns or numpy datetime64 (UTC).

Columns = Any  # pd.DataFrame | Mapping[str, np.ndarray]


def _values(frame: Columns, name: str) -> np.ndarray:
    v = frame[name]
    return v.to_numpy() if isinstance(v, pd.Series) else np.asarray(v)


def _floats(frame: Columns, name: str, n: int) -> np.ndarray:
    """A column as float64 (NaN where missing or not numeric); all NaN when the column is absent."""
    if name not in frame:
        return np.full(n, np.nan)
    v = frame[name]
    if isinstance(v, pd.Series):
        if v.dtype == object:
            v = pd.to_numeric(v, errors="coerce")
        return v.to_numpy(dtype=np.float64, na_value=np.nan)
    v = np.asarray(v)
    if v.dtype == object:
        return pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return v.astype(np.float64, copy=False)


def _present(values: np.ndarray) -> np.ndarray:
    """Where a text column has a value: a string (None, NaN and pd.NA are missing)."""
    return np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))


def _micros(values: Any) -> np.ndarray:
    """UTC times as float64 microseconds since the epoch (NaN where missing)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        us = values.astype("datetime64[us]")
        out = us.astype(np.int64).astype(np.float64)
        out[np.isnat(us)] = np.nan
        return out
    ts = pd.to_datetime(values, utc=True)
    ts = pd.DatetimeIndex(ts) if not isinstance(ts, pd.DatetimeIndex) else ts
    out = ts.as_unit("us").asi8.astype(np.float64)
    out[ts.isna()] = np.nan
    return out


def _rows(frame: Columns) -> int:
    if isinstance(frame, pd.DataFrame):
        return len(frame)
    return len(next(iter(frame.values()))) if frame else 0


def request_columns(txns: Columns, stored: Columns) -> dict[str, np.ndarray]:
    """Request-time features for transactions, given the stored feature values known before each one.

    `txns` are canonical transactions; `stored` is aligned row by row with them and holds the user,
    counterparty, account and list features (missing entities as NaN/NaT, or absent columns). The
    scorer calls this with the online-store rows of its requests; training with the point-in-time
    join. Same code, same values.
    """
    t = _micros(_values(txns, "event_time")).astype(np.int64)  # event_time is never missing
    n = len(t)
    out: dict[str, np.ndarray] = {}
    usd = _floats(txns, "amount_usd", n)
    out["amount_usd"] = usd
    out["log_amount_usd"] = np.log1p(usd)
    for field in ("type", "asset", "payment_method", "channel"):
        codes = CATEGORY_CODES[field]
        out[f"{field}_code"] = np.fromiter((codes[v] for v in _values(txns, field)), dtype=np.int64, count=n)
    out["hour_of_day"] = (t // (3600 * US)) % 24
    out["day_of_week"] = (t // (86400 * US) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    outgoing = np.fromiter((v in OUTGOING for v in _values(txns, "type")), dtype=bool, count=n)
    out["is_outgoing"] = outgoing.astype(np.int64)
    onchain = _present(_values(txns, "destination_address")) | _present(_values(txns, "source_address"))
    out["is_onchain"] = onchain.astype(np.int64)

    def seconds_since(name: str) -> np.ndarray:
        if name not in stored:
            return np.full(n, np.nan)
        return (t - _micros(_values(stored, name))) / US

    has_user = ~np.isnan(_floats(stored, "txn_count_total", n))
    for name, field in KNOWN_SETS.items():
        values = _values(txns, DISTINCT_USER_FIELDS[name])
        if f"known_{name}_30d" not in stored:
            flag = np.ones(n, dtype=np.int64)
        else:
            known = _values(stored, f"known_{name}_30d")
            flag = np.array(
                [0 if isinstance(k, str) and v in k.split(SEP) else 1 for v, k in zip(values, known, strict=True)],
                dtype=np.int64,
            )
        out[field] = np.where(_present(values), flag, 0)
    out["seconds_since_prev_txn"] = seconds_since("last_event_time")
    out["account_age_days"] = seconds_since("signup_time") / 86400.0
    mean = _floats(stored, "usd_mean_30d", n)
    std = _floats(stored, "usd_std_30d", n)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["amount_z_30d"] = (usd - mean) / np.where(std > 0, std, np.nan)
        out["amount_to_mean_30d"] = usd / np.where(mean > 0, mean, np.nan)
        amount = _floats(txns, "amount", n)
        balance = np.full(n, np.nan)
        assets = _values(txns, "asset")
        for a in ASSETS:
            sel = assets == a
            if f"balance_{a}" in stored and sel.any():
                balance[sel] = _floats(stored, f"balance_{a}", n)[sel]
        share = amount / np.where(balance > 0, balance, np.nan)
        share = np.where(np.isnan(share) & outgoing & has_user, 10.0, share)
        out["balance_share_leaving"] = np.where(outgoing, share, 0.0)
    for name in ("amount_z_30d", "amount_to_mean_30d", "balance_share_leaving"):
        # a tiny (even subnormal) mean, spread or balance divides into infinity: bounded, NaN kept
        out[name] = np.clip(out[name], -RATIO_CAP, RATIO_CAP)
    for kind in COUNTERPARTIES:
        out[f"{kind}_age_days"] = seconds_since(f"{kind}_first_seen") / 86400.0
    return {k: out[k] for k in REQUEST_FEATURES}


def request_features(txns: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """`request_columns` as a DataFrame aligned with `txns` (training and backtests)."""
    return pd.DataFrame(request_columns(txns, stored), index=txns.index)


# ---------------------------------------------------------------------------------------------
# The model's inputs: stored numeric features plus request-time features, in one fixed order.


def stored_feature_names() -> list[str]:
    """Every stored feature, view by view (user, counterparties, account, address lists)."""
    names = user_feature_names()
    for kind in COUNTERPARTIES:
        names += counterparty_feature_names(kind)
    return names + ACCOUNT_FEATURES + ADDRESS_LIST_FEATURES


def model_feature_names() -> list[str]:
    """The model's input columns: numeric stored features (times and sets enter through request
    features as ages and "new" flags) followed by the request-time features."""
    numeric = [
        n for n in stored_feature_names() if not n.endswith(("_time", "_first_seen")) and not n.startswith("known_")
    ]
    return numeric + REQUEST_FEATURES


_MODEL_COLUMNS = tuple(model_feature_names())


def model_array(stored: Columns, request: Columns) -> np.ndarray:
    """The float matrix the model scores: `model_feature_names()` columns, missing values as NaN.

    A name in both inputs takes the request's value."""
    n = _rows(request)
    absent = np.full(n, np.nan)
    columns = []
    for c in _MODEL_COLUMNS:
        source = request if c in request else stored if c in stored else None
        v = absent if source is None else source[c]
        if not (isinstance(v, np.ndarray) and v.dtype.kind in "fiub"):  # numeric numpy columns go in as they are
            v = _floats(source, c, n)
        columns.append(v)
    # One conversion for the whole block (per-column conversions cost more than the scorer's features).
    # Transposed, it is column-major: each feature's values stay contiguous, as pandas and LightGBM take them.
    return np.array(columns, dtype=np.float64).T


def model_matrix(stored: Columns, request: Columns) -> pd.DataFrame:
    """`model_array` with its column names."""
    return pd.DataFrame(model_array(stored, request), columns=list(_MODEL_COLUMNS))
