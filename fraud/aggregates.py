"""Windows evaluated at the scoring instant: one pure function of (an entity's events, query times).

A feature of an entity at time t is computed from the entity's events strictly before t:
- a windowed feature (counts, sums, distinct counts, mean and spread, label-derived risk) is the
  value over the window `[t - w, t)`, over the entity's MAX_EVENTS most recent events before t (the
  most recent MAX_EVENTS fraud labels, for label counts): exact for every entity below that many
  events in a window, a bound on the stored state of the busiest ones;
- a running total (transaction count, balances, last event time, first seen) is over all its events
  before t, plus a carry of the events no longer held (`Entities.carry`).

The same functions run on both sides of the model. Training evaluates them over the whole history
at each labelled transaction's time (carry empty). The scorer evaluates them over the entity's online
row (its recent events, fraud labels and carry, kept by `fraud.feature_state`) at the request's
time. A request at or after the entity's latest event therefore gets exactly what the training row
of a transaction at that time got. An entity with no event before t (and no carry) has no features
(NaN), as an entity with no online row has none.

Events are encoded as float64 matrices (`user_events`, `counterparty_events`): times in microseconds
(exact below 2**53), categories as codes, identifiers (devices, IPs, countries, addresses, users,
transactions) as 52-bit hashes (`key_hash`), so an online row is one list of doubles. Distinct counts
compare hashes: two different values collide with probability ~2**-52 per pair.

All window arithmetic is on int64 microseconds through a shared rank space: no float rounding decides
whether an event falls in a window. Queries and events are merged into one order where a query sorts
before the events at its own instant (its window ends at t, exclusive), and per-event intervals of
queries (how long an event stays in the windows that follow it) are summed with difference arrays:
the cost is the events plus the queries, whatever the windows hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud import features as F

MAX_EVENTS = 1024  # most recent events (and fraud labels) of an entity a window is evaluated over
US = F.US

# Columns of an entity's event matrix.
USER_COLUMNS: tuple[str, ...] = (
    "t",
    "type",
    "usd",
    *F.DISTINCT_USER_FIELDS,  # devices, ips, countries, dest_addresses (hashes)
    *(f"post_{a}" for a in F.ASSETS),  # what the event moves on each balance (`F.balance_postings`)
)
COUNTERPARTY_COLUMNS: tuple[str, ...] = ("t", "txn", "user", "confirmed_at")
# Carried totals of the events an online row no longer holds (training: none).
USER_CARRY: tuple[str, ...] = ("count", "last_t", *(f"balance_{a}" for a in F.ASSETS))
COUNTERPARTY_CARRY: tuple[str, ...] = ("count", "first_t")
U = {c: j for j, c in enumerate(USER_COLUMNS)}
C = {c: j for j, c in enumerate(COUNTERPARTY_COLUMNS)}
UC = {c: j for j, c in enumerate(USER_CARRY)}
CC = {c: j for j, c in enumerate(COUNTERPARTY_CARRY)}
_TYPE_CODES = F.CATEGORY_CODES["type"]


def key_hash(values: np.ndarray | pd.Series) -> np.ndarray:
    """Identifiers as 52-bit hashes held exactly in float64 (NaN where missing): stable across processes."""
    v = np.asarray(values, dtype=object)
    out = np.full(len(v), np.nan)
    present = F._present(v)
    if present.any():
        h = pd.util.hash_array(v[present], categorize=False)
        out[present] = (h >> np.uint64(12)).astype(np.float64)
    return out


def user_events(events: pd.DataFrame) -> np.ndarray:
    """Canonical transactions as rows of the user event matrix (`USER_COLUMNS`), in the given order."""
    m = np.empty((len(events), len(USER_COLUMNS)))
    m[:, U["t"]] = F.to_micros(events["event_time"]).astype(np.float64)
    m[:, U["type"]] = events["type"].map(_TYPE_CODES).to_numpy(dtype=np.float64)
    m[:, U["usd"]] = events["amount_usd"].to_numpy(dtype=np.float64)
    for name, field in F.DISTINCT_USER_FIELDS.items():
        m[:, U[name]] = key_hash(events[field].to_numpy())
    m[:, U[f"post_{F.ASSETS[0]}"] :] = F.balance_postings(events)
    return m


def counterparty_events(events: pd.DataFrame, confirmed_at: np.ndarray | None = None) -> np.ndarray:
    """Canonical transactions as rows of a counterparty's event matrix (`COUNTERPARTY_COLUMNS`).

    `confirmed_at`: per event, when its transaction was first labelled fraud (microseconds; +inf: not)."""
    m = np.empty((len(events), len(COUNTERPARTY_COLUMNS)))
    m[:, C["t"]] = F.to_micros(events["event_time"]).astype(np.float64)
    m[:, C["txn"]] = key_hash(events["transaction_id"].to_numpy())
    m[:, C["user"]] = key_hash(events["user_id"].to_numpy())
    m[:, C["confirmed_at"]] = np.inf if confirmed_at is None else confirmed_at
    return m


def first_fraud_label(labels: pd.DataFrame | None) -> pd.Series:
    """Per transaction id, the time (microseconds) of its earliest fraud label."""
    if labels is None or labels.empty:
        return pd.Series(dtype=np.float64)
    frauds = labels[labels["is_fraud"].astype(bool)]
    times = pd.Series(F.to_micros(frauds["label_time"]).astype(np.float64), index=frauds["transaction_id"].to_numpy())
    return times.groupby(level=0).min()


@dataclass(frozen=True)
class Entities:
    """Events of many entities, sorted by (entity, time): what windows are evaluated over.

    `group` numbers the entities (ascending with the rows); `carry` holds, per entity, the totals of
    events not in `events` (`USER_CARRY` / `COUNTERPARTY_CARRY`); `label_group`/`label_time` are the
    entities' fraud label times (counterparties), sorted the same way."""

    group: np.ndarray
    events: np.ndarray
    carry: np.ndarray
    label_group: np.ndarray
    label_time: np.ndarray


def sort_events(group: np.ndarray, events: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """The order that sorts rows by (group, time[, tiebreak])."""
    keys = (events[:, 0], group) if tiebreak is None else (tiebreak, events[:, 0], group)
    return np.lexsort(keys)


def entities_of(
    keys: pd.Series, matrix: np.ndarray, n_carry: int, labels: tuple[pd.Series, np.ndarray] | None = None
) -> tuple[Entities, pd.Index]:
    """The `Entities` of a whole history (no carry: every event is held), and the index of their keys.

    `keys` is the entity key of each row of `matrix` (rows without a key are left out); `labels` the
    (entity key, label time) of each fraud label attached to these entities."""
    present = keys.notna().to_numpy()
    codes, uniques = pd.factorize(keys[present], sort=False)
    index = pd.Index(uniques)
    m = matrix[present]
    order = sort_events(codes, m)
    carry = np.zeros((len(index), n_carry))
    carry[:, 1] = np.nan  # no last event / first sighting carried
    lg = np.zeros(0, dtype=np.int64)
    lt = np.zeros(0, dtype=np.int64)
    if labels is not None and len(labels[0]):
        code = index.get_indexer(labels[0])
        keep = code >= 0
        lg, lt = code[keep].astype(np.int64), labels[1][keep].astype(np.int64)
        lorder = np.lexsort((lt, lg))
        lg, lt = lg[lorder], lt[lorder]
    return Entities(codes[order].astype(np.int64), m[order], carry, lg, lt), index


# ---------------------------------------------------------------------------------------------
# Locating queries among events.


class _Ranker:
    """Maps int64 times into a dense rank space shared by every value compared in one evaluation."""

    def __init__(self, *arrays: np.ndarray) -> None:
        values = np.sort(np.concatenate([a.astype(np.int64) for a in arrays]))
        self.values = values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values
        self.span = len(self.values) + 1

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.values, a).astype(np.int64)


class _Located:
    """Events (sorted by group, time) and queries located against each other for given window widths.

    Index space: `hi[q]` is the first event of the query's group at or after its time (so its events
    before t are [gs[q], hi[q])). Merged space: queries and events in one order, a query before the
    events at its own instant; `pos_e`, `pos_q` are their positions."""

    def __init__(
        self, g: np.ndarray, t: np.ndarray, gq: np.ndarray, tq: np.ndarray, widths: list[int], extra: list[np.ndarray]
    ) -> None:
        self.g, self.t, self.gq, self.tq = g, t, gq, tq
        self.rank = _Ranker(t, tq, *(tq - w for w in widths), *(t + w for w in widths), *extra)
        span = self.rank.span
        self.ekey = g * span + self.rank(t)
        self.qkey = gq * span + self.rank(tq)
        self.gs = np.searchsorted(g, gq, "left").astype(np.int64)
        self.hi = np.searchsorted(self.ekey, self.qkey, "left").astype(np.int64)
        merged = np.concatenate([self.qkey * 2, self.ekey * 2 + 1])
        order = np.argsort(merged, kind="stable")
        self.mkey = merged[order]
        pos = np.empty(len(merged), dtype=np.int64)
        pos[order] = np.arange(len(merged))
        self.pos_q, self.pos_e = pos[: len(tq)], pos[len(tq) :]
        self.n_merged = len(merged)
        self._lo: dict[int, np.ndarray] = {}
        self._end: dict[int, np.ndarray] = {}

    def lo(self, width: int) -> np.ndarray:
        """First event of the query's window [t - w, t), among its MAX_EVENTS most recent events before t."""
        if width not in self._lo:
            start = np.searchsorted(self.ekey, self.gq * self.rank.span + self.rank(self.tq - width), "left")
            self._lo[width] = np.maximum(start, self.hi - MAX_EVENTS).astype(np.int64)
        return self._lo[width]

    def after(self, times: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Merged position of the first query of group g later than each time (after the queries at it)."""
        return np.searchsorted(self.mkey, (g * self.rank.span + self.rank(times)) * 2, "right").astype(np.int64)

    def cover_end(self, width: int) -> np.ndarray:
        """Per event: merged position where its windows end (the first query past t + w, or with
        MAX_EVENTS events of its group after it)."""
        if width not in self._end:
            n = len(self.t)
            end = self.after(self.t + width, self.g)
            k = np.arange(n) + MAX_EVENTS
            capped = k < n
            capped[capped] = self.g[k[capped]] == self.g[capped]
            end[capped] = np.minimum(end[capped], self.pos_e[k[capped]])
            self._end[width] = end
        return self._end[width]

    def count_covering(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Per query: how many of the merged-position intervals [start, end) hold it."""
        live = start < end
        diff = np.bincount(start[live], minlength=self.n_merged + 1) - np.bincount(
            end[live], minlength=self.n_merged + 1
        )
        return np.cumsum(diff)[self.pos_q].astype(np.int64)


def _group_cumsum(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Running sums of each column that restart at each group (so the float error stays the entity's
    own): plain sequential sums, one `np.cumsum` per group, the same arithmetic for one entity's online
    row as for a whole history."""
    out = np.empty_like(x)
    if not len(x):
        return out
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]).tolist()
    for a, b in zip(starts, [*starts[1:], len(x)], strict=True):
        np.cumsum(x[a:b], axis=0, out=out[a:b])
    return out


def _range_sums(cs: np.ndarray, lo: np.ndarray, hi: np.ndarray, gs: np.ndarray) -> np.ndarray:
    """Sums over event rows [lo, hi) of one group, from the group's running sums `cs`."""
    if not len(cs):
        return np.zeros((len(lo), cs.shape[1]))
    top = np.where((hi > gs)[:, None], cs[np.maximum(hi - 1, 0)], 0.0)
    bottom = np.where((lo > gs)[:, None], cs[np.maximum(lo - 1, 0)], 0.0)
    return top - bottom


def _next_repeat(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """For each event, the next event of its group with the same (non-NaN) value (n when none)."""
    n = len(g)
    repeat = np.full(n, n, dtype=np.int64)
    idx = np.flatnonzero(~np.isnan(v))
    by_value = idx[np.lexsort((idx, v[idx], g[idx]))]
    same = (g[by_value][1:] == g[by_value][:-1]) & (v[by_value][1:] == v[by_value][:-1])
    repeat[by_value[:-1][same]] = by_value[1:][same]
    return repeat


def _distinct(loc: _Located, v: np.ndarray, widths: list[int]) -> list[np.ndarray]:
    """Per query and width: distinct non-missing values of `v` among the events of its window.

    An event stays in the count of the queries after it until the window leaves it, MAX_EVENTS newer
    events push it out, or its value repeats (the repeat carries the count on)."""
    n = len(v)
    present = ~np.isnan(v)
    repeat = _next_repeat(loc.g, v)
    rep_end = np.where(repeat < n, loc.pos_e[np.minimum(repeat, max(n - 1, 0))], loc.n_merged)
    start = (loc.pos_e + 1)[present]
    out = []
    for w in widths:
        end = np.minimum(loc.cover_end(w), rep_end)[present]
        out.append(loc.count_covering(start, end))
    return out


def _seen(loc: _Located, v: np.ndarray, vq: np.ndarray, width: int) -> np.ndarray:
    """Per query: 1 if its own value `vq` is among the values of the events of its window, else 0."""
    n, nq = len(v), len(vq)
    codes, _ = pd.factorize(np.concatenate([v, vq]), use_na_sentinel=True)
    kind = np.r_[np.ones(n, dtype=np.int64), np.zeros(nq, dtype=np.int64)]
    g = np.r_[loc.g, loc.gq]
    rt = np.r_[loc.rank(loc.t), loc.rank(loc.tq)]
    order = np.lexsort((kind, rt, codes, g))  # (group, value, time), a query before events at its instant
    is_event = order < n
    last = np.maximum.accumulate(np.where(is_event, np.arange(len(order)), -1))
    at = np.empty(len(order), dtype=np.int64)
    at[order] = np.arange(len(order))
    prev = last[at[n:]]  # per query: the latest event at or before it in that order
    j = np.where(prev >= 0, order[np.maximum(prev, 0)], 0)
    ok = (prev >= 0) & (codes[n:] >= 0) & (codes[np.minimum(j, max(n - 1, 0))] == codes[n:]) & (n > 0)
    if n:
        ok &= (g[j] == loc.gq) & (loc.t[j] >= loc.tq - width) & (j >= loc.hi - MAX_EVENTS) & (j < loc.hi)
    return ok.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The features of an entity at query times.


def _times(us: np.ndarray) -> np.ndarray:
    """Float microseconds (NaN: none) as datetime64[us] (NaT)."""
    out = np.full(len(us), np.datetime64("NaT"), dtype="datetime64[us]")
    ok = ~np.isnan(us)
    out[ok] = us[ok].astype(np.int64).astype("datetime64[us]")
    return out


def _finish(names: list[str], res: dict[str, np.ndarray], present: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
    """The features in `names` order for every query: NaN (NaT) where the query's entity has nothing
    before it (`present` false) or no entity at all (`ok` false)."""
    nq = len(ok)
    numeric = [n for n in names if res[n].dtype.kind != "M"]
    block = np.full((nq, len(numeric)), np.nan)
    block[ok] = np.where(present[:, None], np.column_stack([res[n] for n in numeric]).astype(np.float64), np.nan)
    out = {n: block[:, j] for j, n in enumerate(numeric)}
    for n in names:
        if res[n].dtype.kind == "M":
            times = np.full(nq, np.datetime64("NaT"), dtype="datetime64[us]")
            times[ok] = np.where(present, res[n], np.datetime64("NaT"))
            out[n] = times
    return {n: out[n] for n in names}


def _nothing(names: list[str], nq: int) -> dict[str, np.ndarray]:
    """No query has an entity: every feature missing."""
    return {
        n: np.full(nq, np.datetime64("NaT"), dtype="datetime64[us]")
        if n.endswith(("_time", "_first_seen"))
        else np.full(nq, np.nan)
        for n in names
    }


def user_at(ent: Entities, gq: np.ndarray, tq: np.ndarray, own: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """User features at query times: windows by type, distinct counts, 30d mean and spread, running
    totals and balances, last event time, and whether the query's own device, IP, country and
    destination were seen in the 30 days before it (`known_<name>_30d`).

    `gq` is each query's entity in `ent` (-1: none), `tq` its time (microseconds), `own` its hashed
    device/ip/country/destination (`key_hash`, by `DISTINCT_USER_FIELDS` name)."""
    names = F.user_feature_names()
    ok = gq >= 0
    if not ok.any():
        return _nothing(names, len(tq))
    m, g = ent.events, ent.group
    t = m[:, U["t"]].astype(np.int64)
    widths = list(F.WINDOWS.values())
    loc = _Located(g, t, gq[ok], tq[ok], widths, [])
    usd = m[:, U["usd"]]
    types = m[:, U["type"]]
    cols = [usd, usd * usd]
    for code in range(len(F.TYPES)):
        is_t = (types == code).astype(np.float64)
        cols += [is_t, usd * is_t]
    posts = m[:, U[f"post_{F.ASSETS[0]}"] :]
    cs = _group_cumsum(np.column_stack([*cols, posts]) if len(m) else np.zeros((0, len(cols) + len(F.ASSETS))), g)
    res: dict[str, np.ndarray] = {}
    distinct = {name: _distinct(loc, m[:, U[name]], widths) for name in F.DISTINCT_USER_FIELDS}
    for k, (w, width) in enumerate(F.WINDOWS.items()):
        lo = loc.lo(width)
        sums = _range_sums(cs, lo, loc.hi, loc.gs)
        count = (loc.hi - lo).astype(np.float64)
        res[f"txn_count_{w}"] = count
        res[f"usd_sum_{w}"] = np.where(count > 0, sums[:, 0], 0.0)  # nothing counted: exactly 0, not float noise
        for j, typ in enumerate(F.TYPES):
            typed = np.rint(sums[:, 2 + 2 * j])
            res[f"{typ}_count_{w}"] = typed
            res[f"{typ}_usd_{w}"] = np.where(typed > 0, sums[:, 3 + 2 * j], 0.0)
        for name in F.DISTINCT_USER_FIELDS:
            res[f"distinct_{name}_{w}"] = distinct[name][k].astype(np.float64)
        if w == "30d":
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = np.where(count > 0, sums[:, 0] / count, np.nan)
                var = np.where(count > 1, sums[:, 1] / count - mean * mean, 0.0)
            res["usd_mean_30d"] = mean
            # E[x^2] - E[x]^2 from running sums: clamp the float noise left where the spread is nil
            res["usd_std_30d"] = np.where(count > 0, np.sqrt(np.where(var > 1e-9 * mean * mean, var, 0.0)), np.nan)
    carry = ent.carry[gq[ok]]
    before = (loc.hi - loc.gs).astype(np.float64)
    res["txn_count_total"] = carry[:, UC["count"]] + before
    balances = _range_sums(cs[:, len(cols) :], loc.gs, loc.hi, loc.gs)
    for j, a in enumerate(F.ASSETS):
        res[f"balance_{a}"] = carry[:, UC[f"balance_{a}"]] + balances[:, j]
    last = np.where(loc.hi > loc.gs, t[np.maximum(loc.hi - 1, 0)] if len(t) else np.nan, carry[:, UC["last_t"]])
    res["last_event_time"] = _times(last.astype(np.float64))
    for name in F.KNOWN_SETS:
        res[f"known_{name}_30d"] = _seen(loc, m[:, U[name]], own[name][ok], F.WINDOWS["30d"])
    return _finish(names, res, res["txn_count_total"] > 0, ok)


def counterparty_at(kind: str, ent: Entities, gq: np.ndarray, tq: np.ndarray) -> dict[str, np.ndarray]:
    """Counterparty features at query times: transactions and distinct users over 24h/7d, first seen,
    and label-derived risk over 7d/30d (`<kind>_fraud_count_<w>`: fraud labels whose label_time falls
    in the window, whichever transaction; `<kind>_fraud_rate_<w>`: the window's transactions known as
    fraud before t, smoothed towards F.PRIOR_RATE: (confirmed + PRIOR_RATE * PRIOR_WEIGHT) /
    (transactions + PRIOR_WEIGHT), within [0, 1])."""
    names = F.counterparty_feature_names(kind)
    ok = gq >= 0
    if not ok.any():
        return _nothing(names, len(tq))
    m, g = ent.events, ent.group
    t = m[:, C["t"]].astype(np.int64)
    confirmed = m[:, C["confirmed_at"]]
    known = np.isfinite(confirmed)
    ct = confirmed[known].astype(np.int64)
    widths = list({**F.SHORT_WINDOWS, **F.RISK_WINDOWS}.values())
    loc = _Located(g, t, gq[ok], tq[ok], widths, [ct, ent.label_time])
    res: dict[str, np.ndarray] = {}
    short = list(F.SHORT_WINDOWS.values())
    users = _distinct(loc, m[:, C["user"]], short)
    for k, (w, width) in enumerate(F.SHORT_WINDOWS.items()):
        res[f"{kind}_txn_count_{w}"] = (loc.hi - loc.lo(width)).astype(np.float64)
        res[f"{kind}_distinct_users_{w}"] = users[k].astype(np.float64)
    carry = ent.carry[gq[ok]]
    first = np.where(loc.hi > loc.gs, t[np.minimum(loc.gs, max(len(t) - 1, 0))] if len(t) else np.nan, np.nan)
    first = np.fmin(first.astype(np.float64), carry[:, CC["first_t"]])
    res[f"{kind}_first_seen"] = _times(first)
    span = loc.rank.span
    lkey = ent.label_group * span + loc.rank(ent.label_time)
    upto = np.searchsorted(lkey, loc.qkey, "left")
    idx = np.flatnonzero(known)
    for w, width in F.RISK_WINDOWS.items():
        since = np.searchsorted(lkey, loc.gq * span + loc.rank(loc.tq - width), "left")
        res[f"{kind}_fraud_count_{w}"] = np.minimum(upto - since, MAX_EVENTS).astype(np.float64)
        start = np.maximum(loc.pos_e[idx] + 1, loc.after(ct, g[idx]))
        frauds = loc.count_covering(start, loc.cover_end(width)[idx])
        activity = (loc.hi - loc.lo(width)).astype(np.float64)
        res[f"{kind}_fraud_rate_{w}"] = (frauds + F.PRIOR_RATE * F.PRIOR_WEIGHT) / (activity + F.PRIOR_WEIGHT)
    return _finish(names, res, (carry[:, CC["count"]] + (loc.hi - loc.gs)) > 0, ok)


def history_entities(history: pd.DataFrame, labels: pd.DataFrame | None) -> dict[str, tuple[Entities, pd.Index]]:
    """Every kind's `Entities` over a whole history (training): events, fraud confirmations, labels."""
    ordered = history.sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)
    out = {"user": entities_of(ordered["user_id"], user_events(ordered), len(USER_CARRY))}
    first = first_fraud_label(labels)
    confirmed = ordered["transaction_id"].map(first).to_numpy(dtype=np.float64)
    matrix = counterparty_events(ordered, np.where(np.isnan(confirmed), np.inf, confirmed))
    attached = None
    if len(first):  # a transaction counts once, from its earliest fraud label
        attached = F.attach_entities(
            pd.DataFrame({"transaction_id": first.index, "label_time": first.to_numpy()}), ordered
        )
    for kind, col in F.COUNTERPARTIES.items():
        lab = None
        if attached is not None:
            has = attached[col].notna()
            lab = (attached.loc[has, col].reset_index(drop=True), attached.loc[has, "label_time"].to_numpy())
        out[kind] = entities_of(ordered[col], matrix, len(COUNTERPARTY_CARRY), lab)
    return out


def own_values(queries: pd.DataFrame) -> dict[str, np.ndarray]:
    """The hashed device, IP, country and destination of query transactions (`user_at`'s `own`)."""
    return {name: key_hash(queries[field].to_numpy()) for name, field in F.DISTINCT_USER_FIELDS.items()}


def features_at(history: pd.DataFrame, labels: pd.DataFrame | None, queries: pd.DataFrame) -> pd.DataFrame:
    """Every user and counterparty feature of each query transaction, from the history strictly before it.

    `labels` are the labels known (training: at the cutoff); a label counts from its label_time on."""
    built = history_entities(history, labels)
    tq = F.to_micros(queries["event_time"])
    cols: dict[str, np.ndarray] = {}
    ent, index = built["user"]
    cols |= user_at(ent, index.get_indexer(pd.Index(queries["user_id"])).astype(np.int64), tq, own_values(queries))
    for kind, key in F.COUNTERPARTIES.items():
        ent, index = built[kind]
        cols |= counterparty_at(kind, ent, index.get_indexer(pd.Index(queries[key])).astype(np.int64), tq)
    # times as tz-aware UTC, as the canonical columns are
    out = {name: pd.DatetimeIndex(c).tz_localize("UTC") if c.dtype.kind == "M" else c for name, c in cols.items()}
    return pd.DataFrame(out, index=queries.index)


Row = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # an online row: flat events, carry, label times


def row_entities(kind: str, rows: list[Row | None]) -> tuple[Entities, np.ndarray]:
    """`Entities` of online rows (one per query, None: no row), and each query's entity in them."""
    width = len(USER_COLUMNS) if kind == "user" else len(COUNTERPARTY_COLUMNS)
    gq = np.full(len(rows), -1, dtype=np.int64)
    events: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    carries: list[np.ndarray] = []
    lgroups: list[np.ndarray] = []
    ltimes: list[np.ndarray] = []
    for i, row in enumerate(rows):
        if row is None:
            continue
        k = len(carries)
        gq[i] = k
        ev = np.asarray(row[0], dtype=np.float64).reshape(-1, width)
        events.append(ev)
        groups.append(np.full(len(ev), k, dtype=np.int64))
        carries.append(np.asarray(row[1], dtype=np.float64))
        if row[2] is not None and len(row[2]):
            ltimes.append(np.asarray(row[2], dtype=np.float64).astype(np.int64))
            lgroups.append(np.full(len(row[2]), k, dtype=np.int64))
    n_carry = len(USER_CARRY) if kind == "user" else len(COUNTERPARTY_CARRY)
    ent = Entities(
        np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64),
        np.concatenate(events) if events else np.zeros((0, width)),
        np.array(carries) if carries else np.zeros((0, n_carry)),
        np.concatenate(lgroups) if lgroups else np.zeros(0, dtype=np.int64),
        np.concatenate(ltimes) if ltimes else np.zeros(0, dtype=np.int64),
    )
    return ent, gq


def features_of_rows(
    rows: dict[str, list[Row | None]], tq: np.ndarray, own: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every user and counterparty feature of queries at times `tq`, each from its entities' online rows
    (`rows` by kind: "user", "address", "device", "ip"; `own`: the queries' hashed values, `own_values`)."""
    ent, gq = row_entities("user", rows["user"])
    cols = user_at(ent, gq, tq, own)
    for kind in F.COUNTERPARTIES:
        ent, gq = row_entities(kind, rows[kind])
        cols |= counterparty_at(kind, ent, gq, tq)
    return cols
