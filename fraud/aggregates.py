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

Window membership is decided on exact integer microseconds (held in float64, exact below 2**53): an
event at s is in the window of a query at t when t - w <= s < t. The loops are compiled with numba
(`_user_kernel`, `_counterparty_kernel`): one request costs about 0.1 ms, a million training rows a
few seconds, with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from fraud import features as F

MAX_EVENTS = 1024  # most recent events (and fraud labels) of an entity a window is evaluated over

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
    for name, column in F.DISTINCT_USER_FIELDS.items():
        m[:, U[name]] = key_hash(events[column].to_numpy())
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


@dataclass(frozen=True, slots=True)
class Entities:
    """Events of many entities, sorted by (entity, time): what windows are evaluated over.

    Entity g's events are `events[bounds[g]:bounds[g + 1]]` and its fraud label times (counterparties)
    `label_time[label_bounds[g]:label_bounds[g + 1]]` (float microseconds, ascending); `carry` holds,
    per entity, the totals of events not in `events` (`USER_CARRY` / `COUNTERPARTY_CARRY`)."""

    events: np.ndarray
    bounds: np.ndarray
    carry: np.ndarray
    label_time: np.ndarray
    label_bounds: np.ndarray


def sort_events(group: np.ndarray, events: np.ndarray) -> np.ndarray:
    """The order that sorts rows by (group, time)."""
    return np.lexsort((events[:, 0], group))


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
    lt = np.zeros(0, dtype=np.float64)
    if labels is not None and len(labels[0]):
        code = index.get_indexer(labels[0])
        keep = code >= 0
        lg, lt = code[keep].astype(np.int64), labels[1][keep].astype(np.float64)
        lorder = np.lexsort((lt, lg))
        lg, lt = lg[lorder], lt[lorder]
    groups = len(index)
    return Entities(m[order], _bounds(codes[order], groups), carry, lt, _bounds(lg, groups)), index


# ---------------------------------------------------------------------------------------------
# The kernels: one compiled loop per kind, over each query's own events, newest first.
#
# For a query at t the kernel finds the first event of its entity at or after t (so the events before t
# are [start, hi)), then walks back from hi - 1, at most MAX_EVENTS events and no further than the
# longest window, adding each event to every window it falls in (t - w <= its time). Distinct counts
# count a value at its most recent occurrence before t (a value is in a window when that occurrence is).
# Running totals are the carry plus the sums of every event before t. The scorer's call (one request)
# and training's (a million) run the same loop, so the window sums agree to the last bit; the totals
# to float precision (the online row holds recent events and a carry, the history all of them).

_USER_WINDOWS = np.array(list(F.WINDOWS.values()), dtype=np.float64)
_SHORT = np.array(list(F.SHORT_WINDOWS.values()), dtype=np.float64)
_RISK = np.array(list(F.RISK_WINDOWS.values()), dtype=np.float64)
_NT = len(F.TYPES)
_ND = len(F.DISTINCT_USER_FIELDS)
_NA = len(F.ASSETS)
_PER_WINDOW = 2 + 2 * _NT + _ND  # count, USD, (count, USD) per type, distinct per field


def _user_names() -> list[str]:
    """The user kernel's output columns, in order (`F.user_feature_names()` members)."""
    names: list[str] = []
    for w in F.WINDOWS:
        names += [f"txn_count_{w}", f"usd_sum_{w}"]
        for t in F.TYPES:
            names += [f"{t}_count_{w}", f"{t}_usd_{w}"]
        names += [f"distinct_{d}_{w}" for d in F.DISTINCT_USER_FIELDS]
    names += ["usd_mean_30d", "usd_std_30d", "last_event_time", "txn_count_total"]
    names += [f"balance_{a}" for a in F.ASSETS]
    return names + [f"known_{name}_30d" for name in F.KNOWN_SETS]


def _counterparty_names(kind: str) -> list[str]:
    names = [f"{kind}_txn_count_{w}" for w in F.SHORT_WINDOWS] + [f"{kind}_distinct_users_{w}" for w in F.SHORT_WINDOWS]
    names += [f"{kind}_first_seen"]
    for w in F.RISK_WINDOWS:
        names += [f"{kind}_fraud_count_{w}", f"{kind}_fraud_rate_{w}"]
    return names


USER_OUT = _user_names()  # a test checks these are `F.user_feature_names()`
# The kernels' output columns in the order the feature lists name them (one fancy index per call).
_USER_NAMES = tuple(F.user_feature_names())
_USER_TAKE = np.array([USER_OUT.index(name) for name in _USER_NAMES], dtype=np.int64)
_CP_NAMES = {kind: tuple(F.counterparty_feature_names(kind)) for kind in F.COUNTERPARTIES}
_CP_TAKE = {
    kind: np.array([_counterparty_names(kind).index(name) for name in names], dtype=np.int64)
    for kind, names in _CP_NAMES.items()
}
_NAT = float(np.iinfo(np.int64).min)  # datetime64's NaT, exactly representable as a float


@numba.njit(cache=True, nogil=True)
def _before(ev: np.ndarray, bounds: np.ndarray, g: int, t: float) -> tuple[int, int]:
    """The group's first held event and the first at or after t: its events before t are [a, hi)."""
    a, b = bounds[g], bounds[g + 1]
    return a, a + np.searchsorted(ev[a:b, 0], t)


@numba.njit(cache=True, nogil=True)
def _user_kernel(
    ev: np.ndarray,
    bounds: np.ndarray,
    carry: np.ndarray,
    qg: np.ndarray,
    qt: np.ndarray,
    own: np.ndarray,
    widths: np.ndarray,
    cap: int,
) -> np.ndarray:
    nq, nw = len(qt), len(widths)
    ncols = nw * _PER_WINDOW + 4 + _NA + _ND
    out = np.full((nq, ncols), np.nan)
    longest = widths.max()
    posted = np.zeros((len(ev), _NA))  # each group's running balances, from its first held event
    for g in range(len(bounds) - 1):
        for e in range(bounds[g], bounds[g + 1]):
            for c in range(_NA):
                before = posted[e - 1, c] if e > bounds[g] else 0.0
                posted[e, c] = before + ev[e, 3 + _ND + c]
    for i in range(nq):
        g = qg[i]
        if g < 0:
            continue
        t = qt[i]
        a, hi = _before(ev, bounds, g, t)
        total = carry[g, 0] + (hi - a)
        if total <= 0:
            continue  # nothing before t: no features, as an entity without an online row has none
        acc = np.zeros((nw, _PER_WINDOW))
        usd_sq = 0.0
        seen = {np.int64(-1)}  # (field, hash) pairs met so far, as field << 52 | hash (hashes are 52-bit)
        seen.discard(np.int64(-1))
        j = hi - 1
        while j >= max(a, hi - cap):
            age = t - ev[j, 0]
            if age > longest:
                break
            usd = ev[j, 2]
            typ = int(ev[j, 1])
            for k in range(nw):
                if age <= widths[k]:
                    acc[k, 0] += 1.0
                    acc[k, 1] += usd
                    acc[k, 2 + 2 * typ] += 1.0
                    acc[k, 3 + 2 * typ] += usd
            if age <= widths[nw - 1]:
                usd_sq += usd * usd
            for f in range(_ND):
                v = ev[j, 3 + f]
                if np.isnan(v):
                    continue
                key = (np.int64(f) << 52) | np.int64(v)
                if key not in seen:
                    seen.add(key)
                    for k in range(nw):
                        if age <= widths[k]:
                            acc[k, 2 + 2 * _NT + f] += 1.0
            j -= 1
        row = out[i]
        row[: nw * _PER_WINDOW] = acc.ravel()
        col = nw * _PER_WINDOW
        count, usd_sum = acc[nw - 1, 0], acc[nw - 1, 1]
        if count > 0:
            mean = usd_sum / count
            var = usd_sq / count - mean * mean if count > 1 else 0.0
            # E[x^2] - E[x]^2: clamp the float noise left where the spread is nil
            row[col] = mean
            row[col + 1] = np.sqrt(var) if var > 1e-9 * mean * mean else 0.0
        row[col + 2] = ev[hi - 1, 0] if hi > a else carry[g, 1]
        row[col + 3] = total
        for c in range(_NA):
            row[col + 4 + c] = carry[g, 2 + c] + (posted[hi - 1, c] if hi > a else 0.0)
        for f in range(_ND):
            v = own[i, f]
            row[col + 4 + _NA + f] = 0.0 if np.isnan(v) or ((np.int64(f) << 52) | np.int64(v)) not in seen else 1.0
    return out


@numba.njit(cache=True, nogil=True)
def _counterparty_kernel(
    ev: np.ndarray,
    bounds: np.ndarray,
    carry: np.ndarray,
    labels: np.ndarray,
    lbounds: np.ndarray,
    qg: np.ndarray,
    qt: np.ndarray,
    short: np.ndarray,
    risk: np.ndarray,
    cap: int,
    prior: float,
    weight: float,
) -> np.ndarray:
    nq, ns, nr = len(qt), len(short), len(risk)
    out = np.full((nq, 2 * ns + 1 + 2 * nr), np.nan)
    longest = max(short.max(), risk.max())
    for i in range(nq):
        g = qg[i]
        if g < 0:
            continue
        t = qt[i]
        a, hi = _before(ev, bounds, g, t)
        if carry[g, 0] + (hi - a) <= 0:
            continue
        counts = np.zeros(ns)
        users = np.zeros(ns)
        activity = np.zeros(nr)
        confirmed = np.zeros(nr)
        seen = {np.int64(-1)}  # users met so far (52-bit hashes)
        seen.discard(np.int64(-1))
        j = hi - 1
        while j >= max(a, hi - cap):
            age = t - ev[j, 0]
            if age > longest:
                break
            user = np.int64(ev[j, 2])
            fresh = user not in seen
            if fresh:
                seen.add(user)
            for k in range(ns):
                if age <= short[k]:
                    counts[k] += 1.0
                    if fresh:
                        users[k] += 1.0
            for k in range(nr):
                if age <= risk[k]:
                    activity[k] += 1.0
                    if ev[j, 3] < t:  # confirmed fraud before t
                        confirmed[k] += 1.0
            j -= 1
        row = out[i]
        row[:ns] = counts
        row[ns : 2 * ns] = users
        first = ev[a, 0] if hi > a else np.nan
        known = carry[g, 1]
        row[2 * ns] = known if np.isnan(first) or (not np.isnan(known) and known < first) else first
        la, lb = lbounds[g], lbounds[g + 1]
        upto = np.searchsorted(labels[la:lb], t)  # labels before t
        for k in range(nr):
            since = np.searchsorted(labels[la:lb], t - risk[k])  # labels before t - w
            row[2 * ns + 1 + 2 * k] = min(upto - since, cap)
            row[2 * ns + 2 + 2 * k] = (confirmed[k] + prior * weight) / (activity[k] + weight)
    return out


def _bounds(group: np.ndarray, groups: int) -> np.ndarray:
    """Start of each group's rows (and the end of the last) in rows sorted by group."""
    return np.searchsorted(group, np.arange(groups + 1)).astype(np.int64)


def _times(us: np.ndarray) -> np.ndarray:
    """Float microseconds (NaN: none) as datetime64[us] (NaT)."""
    return np.where(np.isnan(us), _NAT, us).astype(np.int64).view("datetime64[us]")


def _arg(a: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """A kernel argument as a C-contiguous, aligned, writable array (copied only when it is not: an online
    row read straight from its protobuf bytes is read-only). numba compiles one specialisation per
    argument layout, so every caller shares the one the scorer warms up at start-up."""
    f = a.flags
    if a.dtype == dtype and f.c_contiguous and f.aligned and f.writeable:
        return a
    return np.array(a, dtype=dtype, order="C")


def user_at(ent: Entities, gq: np.ndarray, tq: np.ndarray, own: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """User features at query times: windows by type, distinct counts, 30d mean and spread, running
    totals and balances, last event time, and whether the query's own device, IP, country and
    destination were seen in the 30 days before it (`known_<name>_30d`).

    `gq` is each query's entity in `ent` (-1: none), `tq` its time (microseconds), `own` its hashed
    device/ip/country/destination (`key_hash`, by `DISTINCT_USER_FIELDS` name). NaN (NaT) where the
    entity has nothing before the query."""
    values = np.column_stack([own[name] for name in F.DISTINCT_USER_FIELDS]) if len(tq) else np.zeros((0, _ND))
    block = _user_kernel(
        _arg(ent.events),
        _arg(ent.bounds, np.int64),
        _arg(ent.carry),
        _arg(gq, np.int64),
        _arg(tq),
        _arg(values),
        _USER_WINDOWS,
        MAX_EVENTS,
    )
    out = dict(zip(_USER_NAMES, block[:, _USER_TAKE].T, strict=True))
    out["last_event_time"] = _times(out["last_event_time"])
    return out


def counterparty_at(kind: str, ent: Entities, gq: np.ndarray, tq: np.ndarray) -> dict[str, np.ndarray]:
    """Counterparty features at query times: transactions and distinct users over 24h/7d, first seen,
    and label-derived risk over 7d/30d (`<kind>_fraud_count_<w>`: transactions confirmed fraud with
    the label's time in the window, whichever transaction; `<kind>_fraud_rate_<w>`: the window's
    transactions known as fraud before t, smoothed towards F.PRIOR_RATE: (confirmed + PRIOR_RATE *
    PRIOR_WEIGHT) / (transactions + PRIOR_WEIGHT), within [0, 1]). NaN (NaT) where the entity has
    nothing before the query."""
    block = _counterparty_kernel(
        _arg(ent.events),
        _arg(ent.bounds, np.int64),
        _arg(ent.carry),
        _arg(ent.label_time),
        _arg(ent.label_bounds, np.int64),
        _arg(gq, np.int64),
        _arg(tq),
        _SHORT,
        _RISK,
        MAX_EVENTS,
        F.PRIOR_RATE,
        F.PRIOR_WEIGHT,
    )
    out = dict(zip(_CP_NAMES[kind], block[:, _CP_TAKE[kind]].T, strict=True))
    out[f"{kind}_first_seen"] = _times(out[f"{kind}_first_seen"])
    return out


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


Row = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # an online row (float64): flat events, carry, label times


_NO_LABELS = np.zeros(0)
_NO_ROWS = {  # no entity held
    kind: Entities(
        np.zeros((0, width)),
        np.zeros(1, dtype=np.int64),
        np.zeros((0, n_carry)),
        _NO_LABELS,
        np.zeros(1, dtype=np.int64),
    )
    for kind, width, n_carry in (
        ("user", len(USER_COLUMNS), len(USER_CARRY)),
        *((kind, len(COUNTERPARTY_COLUMNS), len(COUNTERPARTY_CARRY)) for kind in F.COUNTERPARTIES),
    )
}


def row_entities(kind: str, rows: list[Row | None]) -> tuple[Entities, np.ndarray]:
    """`Entities` of online rows (one per query, None: no row), and each query's entity in them."""
    width = len(USER_COLUMNS) if kind == "user" else len(COUNTERPARTY_COLUMNS)
    held: list[Row] = []
    at: list[int] = []
    for row in rows:
        at.append(len(held) if row is not None else -1)
        if row is not None:
            held.append(row)
    gq = np.array(at, dtype=np.int64)
    if not held:
        return _NO_ROWS[kind], gq
    if len(held) == 1:  # one request (the scorer's usual batch): no concatenation
        events = np.asarray(held[0][0], dtype=np.float64)
        carry = np.asarray(held[0][1], dtype=np.float64)
        labels = _NO_LABELS if held[0][2] is None else np.asarray(held[0][2], dtype=np.float64)
        one = Entities(
            events.reshape(-1, width),
            np.array([0, len(events) // width], dtype=np.int64),
            carry.reshape(1, -1),
            labels,
            np.array([0, len(labels)], dtype=np.int64),
        )
        return one, gq
    n_carry = len(USER_CARRY) if kind == "user" else len(COUNTERPARTY_CARRY)
    sizes = np.array([0] + [len(row[0]) // width for row in held], dtype=np.int64)
    label_parts = [_NO_LABELS if row[2] is None else row[2] for row in held]
    ent = Entities(
        np.concatenate([row[0] for row in held]).astype(np.float64).reshape(-1, width),
        np.cumsum(sizes),
        np.array([row[1] for row in held], dtype=np.float64).reshape(-1, n_carry),
        np.concatenate(label_parts).astype(np.float64),
        np.cumsum(np.array([0] + [len(p) for p in label_parts], dtype=np.int64)),
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
