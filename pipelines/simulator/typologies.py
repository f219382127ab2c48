"""Fraud typologies: each builds episodes of events with the pattern a real exchange sees.

Sources for the patterns: FATF, "Virtual Assets Red Flag Indicators of Money Laundering and Terrorist
Financing" (2020), and card-network chargeback practice. docs/SIMULATION.md describes each one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fraud.contracts import FraudType
from pipelines.simulator.config import (
    ANDROID,
    BALANCE,
    BANK,
    BTC,
    BUY,
    CARD,
    CASH,
    CHAIN_OF_ASSET,
    CRYPTO,
    DEPOSIT,
    ETH,
    FRAUD_TYPES,
    LABEL_DELAY_DAYS,
    MODE_DRAIN,
    MODE_FIXED,
    MODE_LEGIT,
    N_CHAINS,
    RECEIVE,
    SELL,
    SEND,
    SOL,
    US_PER_DAY,
    US_PER_S,
    USDT,
    WEB,
    WITHDRAWAL,
    SimConfig,
)
from pipelines.simulator.events import EventBatch
from pipelines.simulator.legit import Context, habitual_context
from pipelines.simulator.population import (
    COUNTRIES,
    HOSTING_COUNTRIES,
    Pools,
    Population,
    country_index,
    make_users,
    random_ips,
)
from pipelines.simulator.prices import PricePath
from pipelines.simulator.strings import addresses, hex_ids, ipv4, scramble

US_PER_MIN = 60 * US_PER_S
US_PER_HOUR = 60 * US_PER_MIN


@dataclass
class BadList:
    """Sanctioned and mixer addresses: pool index, chain, list name and when each was listed."""

    address: np.ndarray
    chain: np.ndarray
    is_mixer: np.ndarray
    listed_us: np.ndarray


@dataclass
class FraudContext:
    """What typologies draw on: the population, pools, prices, bad list and ring infrastructure."""

    rng: np.random.Generator
    cfg: SimConfig
    pop: Population
    pools: Pools
    prices: PricePath
    bad: BadList
    established: np.ndarray  # legit users older than 30 days at the window start
    ring_devices: np.ndarray  # device farm shared by fraud rings
    ring_addresses: np.ndarray  # (N_CHAINS, k) cash-out addresses reused across episodes


def make_bad_list(rng: np.random.Generator, cfg: SimConfig, pools: Pools) -> BadList:
    """A sanctions and mixer address list that grows over the window (about half listed before it)."""
    n = 60 + 3 * cfg.days
    chain = rng.choice(N_CHAINS, n, p=[0.4, 0.5, 0.1])
    idx = np.empty(n, dtype=np.int64)
    for c in range(N_CHAINS):
        sel = chain == c
        idx[sel] = pools.addresses.add(addresses(rng, c, int(sel.sum())))
    before = rng.random(n) < 0.5
    listed = np.where(
        before,
        cfg.start_us - (rng.uniform(1, 730, n) * US_PER_DAY).astype(np.int64),
        cfg.start_us + rng.integers(0, cfg.end_us - cfg.start_us, n),
    )
    return BadList(address=idx, chain=chain, is_mixer=rng.random(n) < 0.55, listed_us=listed.astype(np.int64))


def make_context(
    rng: np.random.Generator, cfg: SimConfig, pop: Population, pools: Pools, prices: PricePath, bad: BadList
) -> FraudContext:
    """Shared fraud infrastructure: device farm and reused cash-out addresses."""
    old = np.flatnonzero(pop.signup_us < cfg.start_us - 30 * US_PER_DAY)
    if len(old) == 0:  # a tiny population: any customer will do
        old = np.arange(pop.size)
    devices = pools.devices.add(hex_ids("dev_", scramble(rng.integers(0, 2**63, 40).astype(np.uint64), 13)))
    ring = np.stack([pools.addresses.add(addresses(rng, c, 25)) for c in range(N_CHAINS)])
    return FraudContext(rng, cfg, pop, pools, prices, bad, old, devices, ring)


# --- helpers ---------------------------------------------------------------------------------------


def episode_sizes(rng: np.random.Generator, n_events: int, draw: Callable[[int], np.ndarray]) -> np.ndarray:
    """Episode sizes from `draw` whose total is exactly `n_events` (the last episode is trimmed)."""
    if n_events <= 0:
        return np.zeros(0, dtype=np.int64)
    sizes = np.maximum(draw(n_events), 1).astype(np.int64)
    total = np.cumsum(sizes)
    k = int(np.searchsorted(total, n_events)) + 1
    sizes = sizes[:k].copy()
    sizes[-1] -= int(total[k - 1] - n_events)
    return sizes


def expand(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: its episode index and position within the episode."""
    ep = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.cumsum(sizes) - sizes
    return ep, np.arange(int(sizes.sum())) - starts[ep]


def offsets(rng: np.random.Generator, sizes: np.ndarray, mean_gap_us: float) -> np.ndarray:
    """Cumulative time offsets within episodes: 0 for the first event, exponential gaps after."""
    ep, pos = expand(sizes)
    gaps = np.where(pos == 0, 0, rng.exponential(mean_gap_us, len(ep))).astype(np.int64)
    csum = np.cumsum(gaps)
    starts = np.cumsum(sizes) - sizes
    return csum - csum[starts][ep]


def fresh_addresses(ctx: FraudContext, asset: np.ndarray) -> np.ndarray:
    """A never-seen address per row, on the asset's chain."""
    chain = np.array(CHAIN_OF_ASSET)[asset]
    out = np.empty(len(asset), dtype=np.int64)
    for c in range(N_CHAINS):
        sel = chain == c
        if sel.any():
            out[sel] = ctx.pools.addresses.add(addresses(ctx.rng, c, int(sel.sum())))
    return out


def cashout_addresses(ctx: FraudContext, asset: np.ndarray, p_ring: float) -> np.ndarray:
    """Fresh addresses, except a share `p_ring` that go to the rings' reused cash-out addresses."""
    out = fresh_addresses(ctx, asset)
    ring = ctx.rng.random(len(asset)) < p_ring
    chain = np.array(CHAIN_OF_ASSET)[asset]
    pick = ctx.rng.integers(0, ctx.ring_addresses.shape[1], len(asset))
    out[ring] = ctx.ring_addresses[chain[ring], pick[ring]]
    return out


def attacker_context(ctx: FraudContext, sizes: np.ndarray, home_country: np.ndarray, p_hosting: float) -> Context:
    """Per event, one attacker setup per episode: new or farmed device, VPN/hosting or residential proxy IP."""
    rng, e = ctx.rng, len(sizes)
    ep, _ = expand(sizes)
    devices = ctx.pools.devices.add(hex_ids("dev_", scramble(rng.integers(0, 2**63, e).astype(np.uint64), 17)))
    farm = rng.random(e) < 0.3
    devices[farm] = ctx.ring_devices[rng.integers(0, len(ctx.ring_devices), int(farm.sum()))]
    hosting = rng.random(e) < p_hosting
    hosting_codes = np.array([country_index(c) for c in HOSTING_COUNTRIES])
    country = np.where(hosting, hosting_codes[rng.integers(0, len(hosting_codes), e)], home_country)
    octets = random_ips(rng, country.astype(np.int64))
    octets[hosting] = random_ips(rng, country[hosting].astype(np.int64), hosting=True)
    ips = ctx.pools.ips.add(ipv4(octets))
    channel = rng.choice(np.array([WEB, ANDROID], dtype=np.int8), e, p=[0.65, 0.35])
    return Context(channel=channel[ep], device=devices[ep], ip=ips[ep], country=country[ep].astype(np.int16))


def apply_context(b: EventBatch, c: Context) -> None:
    """Set the context columns of `b`."""
    b.channel, b.device, b.ip, b.country = c.channel, c.device, c.ip, c.country


def label_times(ctx: FraudContext, t_us: np.ndarray, kind: FraudType | None) -> np.ndarray:
    """Label time per event: event time plus a lognormal delay (at least one hour)."""
    median, sigma = LABEL_DELAY_DAYS[kind]
    delay = np.maximum(ctx.rng.lognormal(np.log(median), sigma, len(t_us)) * US_PER_DAY, US_PER_HOUR)
    return t_us + delay.astype(np.int64)


def episode_starts(ctx: FraudContext, e: int, span_us: int, earliest_us: np.ndarray | None = None) -> np.ndarray:
    """Episode start times uniform in the window, leaving `span_us` before its end."""
    window = ctx.cfg.end_us - ctx.cfg.start_us
    lo = ctx.cfg.start_us if earliest_us is None else np.maximum(earliest_us, ctx.cfg.start_us)
    hi = ctx.cfg.end_us - min(span_us, window // 2)
    lo = np.minimum(lo, hi - 1)
    return (lo + ctx.rng.random(e) * (hi - lo)).astype(np.int64)


def new_accounts(ctx: FraudContext, first_use_us: np.ndarray, max_age_days: float, kyc: int) -> np.ndarray:
    """Open fraud-ring accounts that sign up shortly (up to `max_age_days`) before their first use."""
    age = (ctx.rng.uniform(0.02, max_age_days, len(first_use_us)) * US_PER_DAY).astype(np.int64)
    accounts = make_users(ctx.rng, ctx.cfg, ctx.pools, len(first_use_us), first_use_us - age, fraudster=True)
    accounts.kyc[:] = np.where(ctx.rng.random(len(first_use_us)) < 0.8, kyc, 2)
    return ctx.pop.extend(accounts)


def pick_victims(ctx: FraudContext, e: int) -> np.ndarray:
    """Established customers, wealthier ones more likely (attackers go where the money is)."""
    w = np.sqrt(ctx.pop.usd_scale[ctx.established])
    return ctx.rng.choice(ctx.established, e, p=w / w.sum())


def top_assets(ctx: FraudContext, users: np.ndarray) -> np.ndarray:
    """(n, 5) asset codes per user, most preferred first."""
    cdf = ctx.pop.asset_pref[users]
    weights = np.diff(np.concatenate([np.zeros((len(users), 1)), cdf], axis=1), axis=1)
    return np.argsort(-weights, axis=1).astype(np.int8)


def finish(ctx: FraudContext, b: EventBatch, kind: FraudType) -> EventBatch:
    """Mark a batch as fraud of `kind`, clamp times to the window, draw label times."""
    b.fraud[:] = FRAUD_TYPES.index(kind)
    b.t_us = np.minimum(b.t_us, ctx.cfg.end_us - 1)
    unset = b.label_us == 0
    b.label_us[unset] = label_times(ctx, b.t_us[unset], kind)
    return b


# --- typologies ------------------------------------------------------------------------------------


def account_takeover(ctx: FraudContext, n: int) -> EventBatch:
    """New device and IP (often another country) on an old account, balances sent out within hours."""
    rng = ctx.rng
    sizes = episode_sizes(rng, n, lambda k: rng.integers(1, 5, k))
    e = len(sizes)
    ep, pos = expand(sizes)
    victims = pick_victims(ctx, e)
    t0 = episode_starts(ctx, e, 12 * US_PER_HOUR)
    b = EventBatch.empty_like(len(ep))
    b.user = victims[ep]
    b.t_us = t0[ep] + offsets(rng, sizes, 35 * US_PER_MIN)
    # Some attackers first buy with the victim's saved card, then send what they bought.
    card_ep = (rng.random(e) < 0.3) & (sizes > 1)
    card_first = card_ep[ep] & (pos == 0)
    ranked = top_assets(ctx, b.user)
    b.asset = ranked[np.arange(len(ep)), np.clip(pos - card_ep[ep], 0, 4)]
    b.asset = np.where(card_ep[ep] & (b.asset == CASH), BTC, b.asset).astype(np.int8)
    b.type = np.where(rng.random(len(ep)) < 0.6, SEND, WITHDRAWAL).astype(np.int8)
    b.type[card_first] = BUY
    b.pm = np.where(card_first, CARD, CRYPTO).astype(np.int8)
    b.mode[:] = MODE_DRAIN
    b.mode[card_first] = MODE_FIXED
    b.frac = np.where(rng.random(len(ep)) < 0.8, 1.0, rng.uniform(0.5, 0.95, len(ep)))
    b.usd = ctx.pop.usd_scale[b.user] * rng.lognormal(1.2, 0.6, len(ep)) + rng.uniform(300, 2500, len(ep))
    outflow = ~card_first
    b.address[outflow] = cashout_addresses(ctx, b.asset[outflow], 0.15)
    apply_context(b, attacker_context(ctx, sizes, ctx.pop.country[victims], 0.55))
    return finish(ctx, b, FraudType.ACCOUNT_TAKEOVER)


def stolen_card(ctx: FraudContext, n: int) -> EventBatch:
    """Card-funded deposit on a young account, immediate buy, crypto sent out within the hour."""
    rng = ctx.rng
    # Episode: deposit(s), buy, send. Sizes 3 or 4 (a second card); trimmed last episode may be shorter.
    sizes = episode_sizes(rng, n, lambda k: 3 + (rng.random(k) < 0.35))
    e = len(sizes)
    ep, pos = expand(sizes)
    t0 = episode_starts(ctx, e, 3 * US_PER_HOUR)
    users = new_accounts(ctx, t0, 5.0, kyc=1)
    b = EventBatch.empty_like(len(ep))
    b.user = users[ep]
    b.t_us = t0[ep] + offsets(rng, sizes, 8 * US_PER_MIN)
    last = pos == sizes[ep] - 1
    buy = (pos == sizes[ep] - 2) & (sizes[ep] >= 3)
    deposit = ~last & ~buy
    target = rng.choice(np.array([BTC, ETH, USDT], dtype=np.int8), e, p=[0.45, 0.25, 0.30])
    per_deposit = np.clip(rng.lognormal(np.log(600), 0.6, e), 150, 2500)
    n_dep = np.maximum(sizes - 2, 1)
    b.type = np.select([deposit, buy], [DEPOSIT, BUY], SEND).astype(np.int8)
    b.asset = np.where(deposit, CASH, target[ep]).astype(np.int8)
    b.pm = np.select([deposit, buy], [CARD, BALANCE], CRYPTO).astype(np.int8)
    b.usd = np.where(deposit, per_deposit[ep], per_deposit[ep] * n_dep[ep] * 0.98)
    b.usd = np.round(b.usd, 2)
    b.mode = np.where(last, MODE_DRAIN, MODE_FIXED).astype(np.int8)
    b.frac[:] = 1.0
    b.address[last] = cashout_addresses(ctx, b.asset[last], 0.3)
    apply_context(b, attacker_context(ctx, sizes, ctx.pop.country[users], 0.5))
    return finish(ctx, b, FraudType.STOLEN_CARD)


def card_testing(ctx: FraudContext, n: int) -> EventBatch:
    """Bursts of small card deposits (stolen card numbers being tested), seconds to minutes apart."""
    rng = ctx.rng
    sizes = episode_sizes(rng, n, lambda k: rng.integers(5, 21, k))
    e = len(sizes)
    ep, pos = expand(sizes)
    t0 = episode_starts(ctx, e, 2 * US_PER_HOUR)
    users = new_accounts(ctx, t0, 20.0, kyc=1)
    b = EventBatch.empty_like(len(ep))
    b.user = users[ep]
    b.t_us = t0[ep] + offsets(rng, sizes, 70 * US_PER_S)
    b.type[:] = DEPOSIT
    b.asset[:] = CASH
    b.pm[:] = CARD
    b.usd = np.round(rng.uniform(1.0, 15.0, len(ep)), 2)
    cash_in = (pos == sizes[ep] - 1) & (rng.random(e) < 0.2)[ep]  # one card worked: a real deposit
    b.usd[cash_in] = np.round(rng.uniform(200, 800, int(cash_in.sum())), 2)
    b.mode[:] = MODE_FIXED
    apply_context(b, attacker_context(ctx, sizes, ctx.pop.country[users], 0.45))
    return finish(ctx, b, FraudType.CARD_TESTING)


def money_mule(ctx: FraudContext, n: int) -> EventBatch:
    """Many unrelated senders into one account over days, then the total sent on to a ring address."""
    rng, pop, cfg = ctx.rng, ctx.pop, ctx.cfg
    sizes = episode_sizes(rng, n, lambda k: rng.integers(6, 22, k))
    e = len(sizes)
    ep, pos = expand(sizes)
    n_out = np.minimum(rng.integers(1, 4, e), np.maximum(sizes - 1, 1))
    span = (rng.uniform(1, 4, e) * US_PER_DAY).astype(np.int64)
    t0 = episode_starts(ctx, e, 5 * US_PER_DAY)
    # Recruited customers with young accounts, or accounts opened for the purpose.
    young = np.flatnonzero(
        (pop.signup_us > cfg.start_us - 120 * US_PER_DAY) & ~pop.is_fraudster & (pop.signup_us < t0.min())
    )
    recruited = (rng.random(e) < 0.6) & (len(young) > 0)
    users = np.empty(e, dtype=np.int64)
    if recruited.any():
        users[recruited] = rng.choice(young, int(recruited.sum()))
    if (~recruited).any():
        users[~recruited] = new_accounts(ctx, t0[~recruited], 30.0, kyc=1)
    t0 = np.maximum(t0, pop.signup_us[users] + US_PER_HOUR)
    n_in = sizes - n_out
    fan_out = pos >= n_in[ep]
    b = EventBatch.empty_like(len(ep))
    b.user = users[ep]
    in_t = t0[ep] + (rng.random(len(ep)) * span[ep]).astype(np.int64)
    out_t = t0[ep] + span[ep] + (rng.uniform(1, 12, len(ep)) * US_PER_HOUR).astype(np.int64)
    b.t_us = np.where(fan_out, out_t + pos * 10 * US_PER_MIN, in_t)
    asset = rng.choice(np.array([USDT, ETH, CASH], dtype=np.int8), e, p=[0.5, 0.25, 0.25])
    b.asset = asset[ep]
    b.type = np.where(fan_out, np.where(rng.random(len(ep)) < 0.5, SEND, WITHDRAWAL), RECEIVE).astype(np.int8)
    b.pm[:] = CRYPTO
    b.usd = np.clip(rng.lognormal(np.log(900), 0.7, len(ep)), 150, 4000)
    b.mode = np.where(fan_out, MODE_DRAIN, MODE_FIXED).astype(np.int8)
    remaining = n_in[ep] + n_out[ep] - pos  # outflows left including this one
    b.frac = np.where(fan_out, 1.0 / np.maximum(remaining, 1), 1.0)
    b.address[~fan_out] = fresh_addresses(ctx, b.asset[~fan_out])  # unrelated senders
    ring = ctx.ring_addresses[np.array(CHAIN_OF_ASSET)[b.asset], (b.user % ctx.ring_addresses.shape[1])]
    b.address[fan_out] = ring[fan_out]
    own = habitual_context(rng, pop, ctx.pools, b.user, b.t_us)
    apply_context(b, own)
    return finish(ctx, b, FraudType.MONEY_MULE)


def structuring(ctx: FraudContext, n: int) -> EventBatch:
    """Repeated bank deposits just under the reporting threshold over days, then withdrawn on-chain."""
    rng, cfg = ctx.rng, ctx.cfg
    sizes = episode_sizes(rng, n, lambda k: rng.integers(4, 10, k))
    e = len(sizes)
    ep, pos = expand(sizes)
    t0 = episode_starts(ctx, e, 11 * US_PER_DAY)
    own = rng.random(e) < 0.7
    users = np.empty(e, dtype=np.int64)
    users[own] = pick_victims(ctx, int(own.sum()))
    if (~own).any():
        users[~own] = new_accounts(ctx, t0[~own], 60.0, kyc=2)
    b = EventBatch.empty_like(len(ep))
    b.user = users[ep]
    b.t_us = t0[ep] + offsets(rng, sizes, 0.8 * US_PER_DAY)
    last = (pos == sizes[ep] - 1) & (sizes[ep] > 1)
    b.type = np.where(last, WITHDRAWAL, DEPOSIT).astype(np.int8)
    b.asset[:] = CASH
    b.pm = np.where(last, CRYPTO, BANK).astype(np.int8)
    thr = cfg.reporting_threshold_usd
    raw = rng.uniform(0.85 * thr, 0.995 * thr, len(ep))
    b.usd = np.where(rng.random(len(ep)) < 0.5, np.floor(raw / 100) * 100, np.round(raw, 2))
    b.mode = np.where(last, MODE_DRAIN, MODE_FIXED).astype(np.int8)
    b.address[last] = cashout_addresses(ctx, b.asset[last], 0.1)
    apply_context(b, habitual_context(rng, ctx.pop, ctx.pools, b.user, b.t_us))
    return finish(ctx, b, FraudType.STRUCTURING)


def sanctioned_exposure(ctx: FraudContext, n: int) -> EventBatch:
    """Sends to (or receipts from) sanctioned or mixer addresses; some are listed only afterwards."""
    rng, bad = ctx.rng, ctx.bad
    sizes = episode_sizes(rng, n, lambda k: rng.integers(1, 4, k))
    e = len(sizes)
    ep, _ = expand(sizes)
    users = pick_victims(ctx, e)
    t0 = episode_starts(ctx, e, 2 * US_PER_DAY)
    b = EventBatch.empty_like(len(ep))
    b.user = users[ep]
    b.t_us = t0[ep] + offsets(rng, sizes, 6 * US_PER_HOUR)
    pick = rng.integers(0, len(bad.address), len(ep))
    b.asset = np.select(
        [bad.chain[pick] == 0, bad.chain[pick] == 2], [BTC, SOL], rng.choice([ETH, USDT, CASH], len(ep))
    ).astype(np.int8)
    inbound = rng.random(len(ep)) < 0.25
    b.type = np.where(inbound, RECEIVE, np.where(rng.random(len(ep)) < 0.6, SEND, WITHDRAWAL)).astype(np.int8)
    b.pm[:] = CRYPTO
    b.usd = np.clip(rng.lognormal(np.log(2500), 1.0, len(ep)), 300, 50_000)
    b.mode = np.where(inbound, MODE_FIXED, MODE_DRAIN).astype(np.int8)
    b.frac = rng.uniform(0.3, 1.0, len(ep))
    b.address = bad.address[pick]
    own = habitual_context(rng, ctx.pop, ctx.pools, b.user, b.t_us)
    apply_context(b, own)
    b.t_us = np.minimum(b.t_us, ctx.cfg.end_us - 1)
    # Known only once the address is listed: investigated a few days after max(event, listing).
    known = np.maximum(b.t_us, bad.listed_us[pick])
    b.label_us = label_times(ctx, known, FraudType.SANCTIONED_EXPOSURE)
    return finish(ctx, b, FraudType.SANCTIONED_EXPOSURE)


def bust_out(ctx: FraudContext, n: int) -> EventBatch:
    """A new, fully verified account deposits big, buys, and leaves with everything within days."""
    rng = ctx.rng
    sizes = episode_sizes(rng, n, lambda k: rng.integers(3, 6, k))
    e = len(sizes)
    ep, pos = expand(sizes)
    t0 = episode_starts(ctx, e, 4 * US_PER_DAY)
    users = new_accounts(ctx, t0, 4.0, kyc=2)
    b = EventBatch.empty_like(len(ep))
    b.user = users[ep]
    b.t_us = t0[ep] + offsets(rng, sizes, 7 * US_PER_HOUR)
    last = pos == sizes[ep] - 1
    buy = (pos == sizes[ep] - 2) & (sizes[ep] >= 3)
    deposit = ~last & ~buy
    n_dep = np.maximum(sizes - 2, 1)
    total = np.clip(rng.lognormal(np.log(9000), 0.8, e), 2500, 60_000)
    target = rng.choice(np.array([BTC, ETH, USDT], dtype=np.int8), e, p=[0.5, 0.3, 0.2])
    b.type = np.select([deposit, buy], [DEPOSIT, BUY], np.where(rng.random(len(ep)) < 0.5, SEND, WITHDRAWAL))
    b.type = b.type.astype(np.int8)
    b.asset = np.where(deposit, CASH, target[ep]).astype(np.int8)
    b.pm = np.select([deposit, buy], [np.where(rng.random(len(ep)) < 0.6, BANK, CARD), BALANCE], CRYPTO)
    b.pm = b.pm.astype(np.int8)
    b.usd = np.round(np.where(deposit, total[ep] / n_dep[ep], total[ep] * 0.99), 2)
    b.mode = np.where(last, MODE_DRAIN, MODE_FIXED).astype(np.int8)
    b.address[last] = cashout_addresses(ctx, b.asset[last], 0.2)
    apply_context(b, habitual_context(rng, ctx.pop, ctx.pools, b.user, b.t_us))
    return finish(ctx, b, FraudType.BUST_OUT)


def impossible_travel(ctx: FraudContext, n: int) -> EventBatch:
    """A hijacked session: the customer acts at home, minutes later their session acts from far away."""
    rng, pop = ctx.rng, ctx.pop
    sizes = episode_sizes(rng, n, lambda k: rng.integers(1, 4, k))
    e = len(sizes)
    ep, pos = expand(sizes)
    victims = pick_victims(ctx, e)
    t0 = episode_starts(ctx, e, 6 * US_PER_HOUR)
    # The customer's own (legitimate) event at home just before.
    anchor = EventBatch.empty_like(e)
    anchor.user, anchor.t_us = victims, t0
    apply_context(anchor, habitual_context(rng, pop, ctx.pools, victims, t0))
    anchor.country = pop.country[victims].astype(np.int16)
    anchor.ip = pop.home_ip[victims]
    anchor.type[:] = BUY
    anchor.asset = top_assets(ctx, victims)[:, 0]
    anchor.asset = np.where(anchor.asset == CASH, BTC, anchor.asset).astype(np.int8)
    anchor.pm[:] = BALANCE
    anchor.usd = pop.usd_scale[victims] * rng.lognormal(0, 0.5, e)
    # The far-away session: another continent (at least 5 time zones away).
    tz = np.array([tz for _, _, tz in COUNTRIES])
    far = np.abs(tz[None, :] - tz[pop.country[victims]][:, None]) >= 5
    far_country = np.array([rng.choice(np.flatnonzero(row)) for row in far])
    b = EventBatch.empty_like(len(ep))
    b.user = victims[ep]
    b.t_us = t0[ep] + (rng.uniform(8, 90, e) * US_PER_MIN).astype(np.int64)[ep] + offsets(rng, sizes, 6 * US_PER_MIN)
    ctx_far = attacker_context(ctx, sizes, far_country, 0.3)
    # Most keep the victim's device id (stolen session cookie); others show a new one.
    same_device = (rng.random(e) < 0.7)[ep]
    usual = np.where(pop.channel[b.user] == WEB, pop.web_device[b.user], pop.phone_device[b.user])
    ctx_far.device = np.where(same_device, usual, ctx_far.device)
    ctx_far.channel = np.where(
        same_device, np.where(pop.channel[b.user] == WEB, WEB, pop.mobile_channel[b.user]), ctx_far.channel
    ).astype(np.int8)
    apply_context(b, ctx_far)
    ranked = top_assets(ctx, b.user)
    b.asset = np.where(ranked[:, 0] == CASH, ranked[:, 1], ranked[:, 0]).astype(np.int8)
    sell = (pos == 0) & (sizes[ep] > 1) & (rng.random(len(ep)) < 0.5)
    b.type = np.where(sell, SELL, np.where(rng.random(len(ep)) < 0.5, SEND, WITHDRAWAL)).astype(np.int8)
    b.pm = np.where(sell, BALANCE, CRYPTO).astype(np.int8)
    b.asset = np.where(sell | (b.type == SEND), b.asset, np.where(rng.random(len(ep)) < 0.5, CASH, b.asset))
    b.asset = b.asset.astype(np.int8)
    b.mode[:] = MODE_DRAIN
    b.frac = np.where(rng.random(len(ep)) < 0.7, 1.0, rng.uniform(0.4, 0.9, len(ep)))
    b.usd = pop.usd_scale[b.user] * rng.lognormal(1.0, 0.6, len(ep)) + rng.uniform(200, 1500, len(ep))
    out = ~sell
    b.address[out] = cashout_addresses(ctx, b.asset[out], 0.15)
    fraud = finish(ctx, b, FraudType.IMPOSSIBLE_TRAVEL)
    anchor.mode[:] = MODE_LEGIT
    return EventBatch.concat([anchor, fraud])


TYPOLOGIES: dict[FraudType, Callable[[FraudContext, int], EventBatch]] = {
    FraudType.ACCOUNT_TAKEOVER: account_takeover,
    FraudType.STOLEN_CARD: stolen_card,
    FraudType.CARD_TESTING: card_testing,
    FraudType.MONEY_MULE: money_mule,
    FraudType.STRUCTURING: structuring,
    FraudType.SANCTIONED_EXPOSURE: sanctioned_exposure,
    FraudType.BUST_OUT: bust_out,
    FraudType.IMPOSSIBLE_TRAVEL: impossible_travel,
}
