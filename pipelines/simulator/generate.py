"""Compose a history: population, prices, legitimate and fraudulent events, ledger, labels, tables."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fraud.contracts import (
    ACCOUNT_SCHEMA,
    ADDRESS_LIST_SCHEMA,
    LABEL_SCHEMA,
    SCHEMA_VERSION,
    TRANSACTION_SCHEMA,
)
from pipelines.simulator.config import (
    ASSETS,
    CHAIN_OF_ASSET,
    CHANNELS,
    CRYPTO,
    DEPOSIT,
    FRAUD_TYPES,
    LEGIT,
    N_CHAINS,
    PAYMENT_METHODS,
    RECEIVE,
    SEND,
    TYPES,
    WITHDRAWAL,
    SimConfig,
)
from pipelines.simulator.events import EventBatch
from pipelines.simulator.ledger import run_ledger
from pipelines.simulator.legit import legit_events, opening_balances
from pipelines.simulator.population import COUNTRY_CODES, Pools, Population, make_users
from pipelines.simulator.prices import price_path
from pipelines.simulator.strings import StringPool, addresses, hex_ids, scramble, to_pa
from pipelines.simulator.typologies import (
    TYPOLOGIES,
    BadList,
    FraudContext,
    label_times,
    make_bad_list,
    make_context,
)

log = logging.getLogger(__name__)
TS = pa.timestamp("us", tz="UTC")


@dataclass
class History:
    """A simulated history in the canonical table schemas of `fraud.contracts`."""

    transactions: pa.Table
    labels: pa.Table
    accounts: pa.Table
    address_lists: pa.Table
    opening_balances: pa.Table  # holdings at the window start (not one of the canonical files)


def _codes(values: tuple[object, ...], codes: np.ndarray) -> pa.Array:
    """Enum codes as their string values (dictionary decode in Arrow)."""
    dictionary = pa.array([str(getattr(v, "value", v)) for v in values])
    return dictionary.take(pa.array(codes.astype(np.int32)))


def _assign_addresses(
    rng: np.random.Generator,
    ev: EventBatch,
    on_chain: np.ndarray,
    incoming: np.ndarray,
    pop: Population,
    pools: StringPool,
    bad: BadList,
) -> np.ndarray:
    """Counterparty addresses for on-chain events that have none yet, from the user's habits."""
    address = np.where(on_chain, ev.address, -1)
    todo = np.flatnonzero(on_chain & (address < 0))
    chain = np.array(CHAIN_OF_ASSET)[ev.asset[todo]]
    # Well-known services (other exchanges' hot wallets, payment processors), Zipf-popular.
    services = np.stack([pools.add(addresses(rng, c, 40)) for c in range(N_CHAINS)])
    zipf = 1.0 / np.arange(1, 41)
    service = services[chain, rng.choice(40, len(todo), p=zipf / zipf.sum())]
    known = pop.known_addresses[ev.user[todo], chain, rng.integers(0, 2, len(todo))]
    r = rng.random(len(todo))
    p_known = np.where(incoming[todo], 0.45, 0.62)
    p_service = np.where(incoming[todo], 0.35, 0.18)
    picked = np.where(r < p_known, known, np.where(r < p_known + p_service, service, -1))
    fresh = picked < 0
    fresh_idx = np.empty(int(fresh.sum()), dtype=np.int64)
    for c in range(N_CHAINS):
        sel = chain[fresh] == c
        if sel.any():
            fresh_idx[sel] = pools.add(addresses(rng, c, int(sel.sum())))
    picked[fresh] = fresh_idx
    # A few customers pay a service that is sanctioned later (they could not have known).
    later = np.flatnonzero(~bad.is_mixer & (bad.listed_us > ev.t_us.min()))
    if len(later):
        cand = later[rng.integers(0, len(later), len(todo))]
        before = (
            (rng.random(len(todo)) < 0.004)
            & (bad.listed_us[cand] > ev.t_us[todo])
            & (bad.chain[cand] == chain)
            & ~incoming[todo]
        )
        picked[before] = bad.address[cand[before]]
    address[todo] = picked
    return address


def generate(cfg: SimConfig, on_step: Callable[[str], None] | None = None) -> History:
    """Simulate the configured window; deterministic for a given `cfg`."""
    started = time.perf_counter()

    def step(name: str) -> None:
        log.debug("simulate: %s (%.2fs)", name, time.perf_counter() - started)
        if on_step:
            on_step(name)

    seeds = np.random.SeedSequence(cfg.seed).spawn(5)
    r_price, r_pop, r_legit, r_fraud, r_final = (np.random.default_rng(s) for s in seeds)
    pools = Pools(devices=StringPool(), ips=StringPool(), addresses=StringPool())
    step("prices")
    prices = price_path(r_price, cfg.start_us, cfg.days)
    step("population")
    pop = make_users(r_pop, cfg, pools, cfg.users)
    step("legitimate activity")
    legit = legit_events(r_legit, cfg, pop, pools, np.arange(cfg.users))
    step("fraud typologies")
    bad = make_bad_list(r_fraud, cfg, pools)
    ctx: FraudContext = make_context(r_fraud, cfg, pop, pools, prices, bad)
    n_fraud = cfg.fraud_rate / (1.0 - cfg.fraud_rate) * len(legit)
    quotas = {kind: round(n_fraud * cfg.shares.get(kind, 0.0)) for kind in TYPOLOGIES}
    batches = [legit] + [TYPOLOGIES[kind](ctx, n) for kind, n in quotas.items() if n > 0]
    ev = EventBatch.concat(batches)
    step("ledger")
    ev = ev.take(np.lexsort((ev.t_us, ev.user)))
    price = prices.at(ev.asset, ev.t_us)
    opening = opening_balances(r_final, cfg, pop, prices.prices[:, 0])
    led = run_ledger(ev.user, ev.asset, ev.type, ev.pm, ev.usd, ev.frac, ev.mode, price, opening)
    ev.type, ev.pm = led.type, led.pm
    step("addresses and labels")
    outgoing = (ev.type == SEND) | ((ev.type == WITHDRAWAL) & (ev.pm == CRYPTO))
    incoming = (ev.type == RECEIVE) | ((ev.type == DEPOSIT) & (ev.pm == CRYPTO))
    address = _assign_addresses(r_final, ev, outgoing | incoming, incoming, pop, pools.addresses, bad)
    legit_rows = ev.fraud == LEGIT
    ev.label_us = np.where(legit_rows, label_times(ctx_for_labels(r_final, ctx), ev.t_us, None), ev.label_us)
    step("tables")
    order = np.argsort(ev.t_us, kind="stable")
    ev, address, amount, amount_usd = ev.take(order), address[order], led.amount[order], led.amount_usd[order]
    outgoing, incoming = outgoing[order], incoming[order]
    n = len(ev)
    salt = cfg.seed * 0x9E3779B97F4A7C15
    tx_ids = to_pa(hex_ids("tx_", scramble(np.arange(n, dtype=np.uint64), salt)))
    user_ids = to_pa(hex_ids("usr_", scramble(np.arange(pop.size, dtype=np.uint64), salt + 1)))
    addr = pools.addresses
    transactions = pa.table(
        {
            "schema_version": pa.array(np.full(n, SCHEMA_VERSION, np.int16)),
            "transaction_id": tx_ids,
            "event_time": pa.array(ev.t_us, TS),
            "user_id": user_ids.take(pa.array(ev.user)),
            "type": _codes(TYPES, ev.type),
            "asset": _codes(ASSETS, ev.asset),
            "amount": pa.array(amount),
            "amount_usd": pa.array(amount_usd),
            "payment_method": _codes(PAYMENT_METHODS, ev.pm),
            "destination_address": addr.take(np.where(outgoing, address, -1)),
            "source_address": addr.take(np.where(incoming, address, -1)),
            "device_id": pools.devices.take(ev.device),
            "ip_address": pools.ips.take(ev.ip),
            "country": _codes(COUNTRY_CODES, ev.country),
            "channel": _codes(CHANNELS, ev.channel),
        },
        schema=TRANSACTION_SCHEMA,
    )
    fraud_type = pa.array([t.value for t in FRAUD_TYPES]).take(
        pa.array(np.where(ev.fraud < 0, 0, ev.fraud).astype(np.int32), mask=ev.fraud < 0)
    )
    label_order = np.argsort(ev.label_us, kind="stable")
    labels = pa.table(
        {
            "transaction_id": tx_ids,
            "is_fraud": pa.array(ev.fraud != LEGIT),
            "fraud_type": fraud_type,
            "label_time": pa.array(ev.label_us, TS),
        },
        schema=LABEL_SCHEMA,
    ).take(pa.array(label_order))
    accounts = pa.table(
        {
            "user_id": user_ids,
            "signup_time": pa.array(pop.signup_us, TS),
            "kyc_tier": pa.array(pop.kyc.astype(np.int8)),
            "country_of_residence": _codes(COUNTRY_CODES, pop.country),
        },
        schema=ACCOUNT_SCHEMA,
    )
    list_order = np.argsort(bad.listed_us, kind="stable")
    address_lists = pa.table(
        {
            "address": addr.take(bad.address[list_order]),
            "list_name": pa.array(np.where(bad.is_mixer[list_order], "mixer", "sanctions")),
            "listed_time": pa.array(bad.listed_us[list_order], TS),
        },
        schema=ADDRESS_LIST_SCHEMA,
    )
    held = np.argwhere(opening > 0)
    opening_table = pa.table(
        {
            "user_id": user_ids.take(pa.array(held[:, 0])),
            "asset": _codes(ASSETS, held[:, 1]),
            "amount": pa.array(opening[held[:, 0], held[:, 1]]),
        }
    )
    step("done")
    log.info(
        "simulated %d transactions (%d fraud), %d accounts in %.1fs",
        n,
        int((ev.fraud != LEGIT).sum()),
        pop.size,
        time.perf_counter() - started,
    )
    return History(transactions, labels, accounts, address_lists, opening_table)


def ctx_for_labels(rng: np.random.Generator, ctx: FraudContext) -> FraudContext:
    """The fraud context with another generator (legit label delays draw from the final stream)."""
    return FraudContext(
        rng, ctx.cfg, ctx.pop, ctx.pools, ctx.prices, ctx.bad, ctx.established, ctx.ring_devices, ctx.ring_addresses
    )
