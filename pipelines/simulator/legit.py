"""Legitimate activity: sessions at habitual times, from habitual devices and places, with real-life noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulator.config import (
    ANDROID,
    API,
    BALANCE,
    BANK,
    BUY,
    CARD,
    CASH,
    CRYPTO,
    DEPOSIT,
    IOS,
    SELL,
    SEND,
    US_PER_DAY,
    US_PER_S,
    WEB,
    WITHDRAWAL,
    SimConfig,
)
from pipelines.simulator.events import EventBatch
from pipelines.simulator.population import (
    COUNTRIES,
    HOSTING_COUNTRIES,
    HOUR_PROFILE,
    WEEKDAY_WEIGHTS,
    Pools,
    Population,
    country_index,
    random_ips,
)
from pipelines.simulator.strings import hex_ids, ipv4, scramble

US_PER_HOUR = 3600 * US_PER_S
# Transaction type mix of the first event of a session and of later ones (deposit, withdrawal, buy,
# sell, send, receive).
FIRST_TYPE_P = np.array([0.32, 0.12, 0.24, 0.14, 0.08, 0.10])
LATER_TYPE_P = np.array([0.08, 0.17, 0.38, 0.15, 0.17, 0.05])
ROUND_DEPOSITS = np.array([50.0, 100.0, 200.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0])


@dataclass
class Context:
    """Where an event comes from: channel, device, IP and IP-geolocated country."""

    channel: np.ndarray
    device: np.ndarray
    ip: np.ndarray
    country: np.ndarray


def habitual_context(
    rng: np.random.Generator, pop: Population, pools: Pools, user: np.ndarray, t_us: np.ndarray
) -> Context:
    """The context a user's own session has at `t_us`: usual channel and device, home or carrier IP,
    with phone changes, browser resets, trips abroad and VPN use."""
    n = len(user)
    channel = np.where(rng.random(n) < 0.85, pop.channel[user], rng.choice(4, n, p=[0.5, 0.2, 0.25, 0.05]))
    mobile = (channel == IOS) | (channel == ANDROID)
    channel = np.where(mobile, pop.mobile_channel[user], channel).astype(np.int8)
    phone = np.where(t_us >= pop.phone_switch_us[user], pop.new_phone_device[user], pop.phone_device[user])
    device = np.where(mobile, phone, np.where(channel == API, pop.api_device[user], pop.web_device[user]))
    # Cleared cookies or a new browser: a fresh web device id.
    reset = (channel == WEB) & (rng.random(n) < 0.03)
    if reset.any():
        fresh = pools.devices.add(hex_ids("dev_", scramble(rng.integers(0, 2**63, reset.sum()).astype(np.uint64), 5)))
        device = device.copy()
        device[reset] = fresh
    country = pop.country[user].astype(np.int16)
    on_trip = (pop.trip_country[user] >= 0) & (t_us >= pop.trip_start_us[user]) & (t_us < pop.trip_end_us[user])
    country = np.where(on_trip, pop.trip_country[user], country).astype(np.int16)
    vpn = pop.vpn_user[user] & (rng.random(n) < 0.35)
    hosting = np.array([country_index(c) for c in HOSTING_COUNTRIES])
    country = np.where(vpn, hosting[rng.integers(0, len(hosting), n)], country).astype(np.int16)
    # IP: home broadband for web at home, a fresh carrier IP on mobile, random local IPs abroad or elsewhere.
    octets = random_ips(rng, country)
    octets[mobile, :2] = pop.carrier_octets[user[mobile]]
    octets[vpn] = random_ips(rng, country[vpn], hosting=True)
    fresh_ip = pools.ips.add(ipv4(octets))
    at_home = ~mobile & ~on_trip & ~vpn & (rng.random(n) < 0.85)
    ip = np.where(at_home, pop.home_ip[user], fresh_ip)
    return Context(channel=channel, device=device.astype(np.int64), ip=ip.astype(np.int64), country=country)


def session_times(
    rng: np.random.Generator, cfg: SimConfig, pop: Population, users: np.ndarray, rate_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Session start times for `users`: Poisson counts, local daily and weekly seasonality."""
    start, end = cfg.start_us, cfg.end_us
    active_from = np.maximum(pop.signup_us[users], start)
    days = (end - active_from) / US_PER_DAY
    counts = rng.poisson(pop.sessions_per_day[users] * days * rate_scale * WEEKDAY_WEIGHTS.max())
    su = np.repeat(users, counts)
    frm = np.repeat(active_from, counts)
    t = frm + (rng.random(len(su)) * (end - frm)).astype(np.int64)
    day = (t - start) // US_PER_DAY
    hour_cdf = np.cumsum(HOUR_PROFILE) / HOUR_PROFILE.sum()
    local_hour = np.searchsorted(hour_cdf, rng.random(len(su)))
    tz = np.array([tz for _, _, tz in COUNTRIES])[pop.country[su]]
    utc_hour = (local_hour - tz) % 24
    t = start + day * US_PER_DAY + utc_hour * US_PER_HOUR + (rng.random(len(su)) * US_PER_HOUR).astype(np.int64)
    t = np.where(t < frm, frm + (rng.random(len(su)) * US_PER_HOUR).astype(np.int64), t)
    weekday = ((t // US_PER_DAY) + 3) % 7  # 1970-01-01 was a Thursday
    keep = (rng.random(len(su)) < WEEKDAY_WEIGHTS[weekday] / WEEKDAY_WEIGHTS.max()) & (t < end)
    return su[keep], t[keep]


def legit_events(
    rng: np.random.Generator, cfg: SimConfig, pop: Population, pools: Pools, users: np.ndarray
) -> EventBatch:
    """All legitimate events of `users` over the window, sessions of one or more events each."""
    su, st = session_times(rng, cfg, pop, users)
    per_session = rng.geometric(0.55, len(su))
    n = int(per_session.sum())
    user = np.repeat(su, per_session)
    first = np.zeros(n, dtype=bool)
    starts = np.cumsum(per_session) - per_session
    first[starts] = True
    position = np.arange(n) - np.repeat(starts, per_session)
    gaps = np.where(first, 0, rng.exponential(180 * US_PER_S, n)).astype(np.int64)
    session_id = np.repeat(np.arange(len(su)), per_session)
    t = np.repeat(st, per_session) + (np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[starts], per_session))
    t = np.minimum(t, cfg.end_us - 1)
    ctx = habitual_context(rng, pop, pools, su, st)
    b = EventBatch.empty_like(n)
    b.user, b.t_us = user, t
    b.channel, b.device, b.ip, b.country = (
        ctx.channel[session_id],
        ctx.device[session_id],
        ctx.ip[session_id],
        ctx.country[session_id],
    )
    u = rng.random(n)
    type_cdf = np.where((position == 0)[:, None], np.cumsum(FIRST_TYPE_P), np.cumsum(LATER_TYPE_P))
    b.type = (u[:, None] > type_cdf).sum(axis=1).clip(0, 5).astype(np.int8)
    asset, non_cash = pick_assets(rng, pop, user)
    b.asset = asset
    fiat_deposit = (b.type == DEPOSIT) & (rng.random(n) < np.where(pop.fiat_user[user], 0.85, 0.15))
    other_fiat = np.where(pop.fiat_pm[user] == CARD, BANK, CARD)
    fiat_pm = np.where(rng.random(n) < 0.9, pop.fiat_pm[user], other_fiat)
    trade = (b.type == BUY) | (b.type == SELL)
    b.asset = np.where(fiat_deposit, CASH, np.where(trade, non_cash, b.asset)).astype(np.int8)
    b.pm = np.full(n, CRYPTO, np.int8)
    b.pm[fiat_deposit] = fiat_pm[fiat_deposit]
    b.pm[trade] = BALANCE
    card_buy = (b.type == BUY) & (rng.random(n) < 0.1)
    b.pm[card_buy] = CARD
    # Fiat users cash out to their bank account; crypto natives withdraw on-chain.
    cash_out = (b.type == WITHDRAWAL) & pop.fiat_user[user] & (rng.random(n) < 0.5)
    b.asset[cash_out] = CASH
    bank_wd = (b.type == WITHDRAWAL) & (b.asset == CASH) & (rng.random(n) < 0.8)
    b.pm[bank_wd] = BANK
    # Sizes: the user's own heavy-tailed scale; fiat deposits are often round numbers.
    usd = pop.usd_scale[user] * rng.lognormal(0.0, 0.9, n)
    rounded = ROUND_DEPOSITS[np.clip(np.searchsorted(ROUND_DEPOSITS, usd), 0, len(ROUND_DEPOSITS) - 1)]
    round_it = fiat_deposit & (rng.random(n) < 0.4)
    b.usd = np.maximum(np.where(round_it, rounded, usd), 5.0)
    full_p = np.select([b.type == WITHDRAWAL, b.type == SELL, b.type == SEND], [0.3, 0.25, 0.15], 0.0)
    b.frac = np.where(rng.random(n) < full_p, 1.0, rng.beta(2.0, 3.0, n))
    return b


def pick_assets(rng: np.random.Generator, pop: Population, user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: an asset from the user's preferences, and a non-cash asset for trades."""
    cdf = pop.asset_pref[user]
    asset = (rng.random(len(user))[:, None] > cdf).sum(axis=1).clip(0, 4)
    no_cash = np.diff(np.concatenate([np.zeros((len(user), 1)), cdf], axis=1), axis=1)
    no_cash[:, CASH] = 0.0
    no_cash_cdf = np.cumsum(no_cash, axis=1) / no_cash.sum(axis=1, keepdims=True)
    no_cash_cdf[:, -1] = 1.0
    non_cash = (rng.random(len(user))[:, None] > no_cash_cdf).sum(axis=1).clip(0, 4)
    return asset.astype(np.int8), non_cash.astype(np.int8)


def opening_balances(
    rng: np.random.Generator, cfg: SimConfig, pop: Population, price_at_start: np.ndarray
) -> np.ndarray:
    """(n_users, 5) holdings at the window start: customers who joined earlier hold a few months' flow."""
    n = pop.size
    weights = np.diff(np.concatenate([np.zeros((n, 1)), pop.asset_pref], axis=1), axis=1)
    usd = pop.usd_scale * rng.lognormal(np.log(6.0), 1.0, n) * (pop.signup_us < cfg.start_us)
    holds = rng.random((n, 5)) < 0.8
    return np.floor(usd[:, None] * weights * holds / price_at_start[None, :] * 1e8) / 1e8
