"""The ledger: replays events per user in time order, sizes them from balances, keeps balances honest.

This is the simulator's one per-event Python loop (balances are sequential by nature); it touches only
plain lists and floats. Legitimate outflows never exceed the balance: an impossible one becomes the
inflow a real user would have made instead. Fraud may spend stolen funds; the balance then floors at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulator.config import (
    BALANCE,
    BUY,
    CARD,
    CASH,
    DEPOSIT,
    MODE_DRAIN,
    MODE_LEGIT,
    RECEIVE,
    SELL,
    SEND,
    WITHDRAWAL,
)

MIN_USD = 1.0  # smallest legit trade the exchange accepts
_N_ASSETS = 5


@dataclass
class LedgerResult:
    """Final type, payment method, amount (asset units) and amount_usd per event."""

    type: np.ndarray
    pm: np.ndarray
    amount: np.ndarray
    amount_usd: np.ndarray


def run_ledger(
    user: np.ndarray,
    asset: np.ndarray,
    type_: np.ndarray,
    pm: np.ndarray,
    usd: np.ndarray,
    frac: np.ndarray,
    mode: np.ndarray,
    price: np.ndarray,
    opening: np.ndarray,
) -> LedgerResult:
    """Size every event from `opening` balances ((n_users, 5) asset units); rows sorted by user, then time."""
    n = len(user)
    bal = opening.ravel().tolist()
    us, assets, types, pms = user.tolist(), asset.tolist(), type_.tolist(), pm.tolist()
    usds, fracs, modes, prices = usd.tolist(), frac.tolist(), mode.tolist(), price.tolist()
    amount = [0.0] * n
    amount_usd = [0.0] * n
    conversions = {SELL: BUY, SEND: RECEIVE, WITHDRAWAL: DEPOSIT}
    for i in range(n):
        u5 = us[i] * _N_ASSETS
        k = u5 + assets[i]
        t = types[i]
        p = prices[i]
        m = modes[i]
        if t in (SELL, SEND, WITHDRAWAL):
            b = bal[k]
            if m == MODE_LEGIT or (m == MODE_DRAIN and b * p >= 20.0):
                q = int(b * fracs[i] * 1e8) / 1e8
            else:
                q = int(usds[i] / p * 1e8) / 1e8
            if m == MODE_LEGIT and q * p < MIN_USD:
                # Nothing to move: the user tops up instead (a sell becomes a card buy).
                t = types[i] = conversions[t]
                if t == BUY:
                    pms[i] = CARD
            else:
                bal[k] = b - q if b > q else 0.0
                amount[i] = q
                if t == SELL:
                    proceeds = int(q * p * 100) / 100
                    bal[u5 + CASH] += proceeds
                    amount_usd[i] = proceeds
                else:
                    amount_usd[i] = q * p
                continue
        if t == BUY:
            spend = usds[i]
            if pms[i] == BALANCE:
                c = u5 + CASH
                cash = bal[c]
                if m == MODE_LEGIT:
                    spend = cash if cash < spend else spend
                spend = int(spend * 100) / 100
                if spend < MIN_USD and m == MODE_LEGIT:
                    pms[i] = CARD  # not enough cash: an instant card buy
                    spend = int(usds[i] * 100) / 100
                else:
                    bal[c] = cash - spend if cash > spend else 0.0
            else:
                spend = int(spend * 100) / 100
            q = int(spend / p * 1e8) / 1e8
            bal[k] += q
            amount[i] = q
            amount_usd[i] = spend
        else:  # DEPOSIT, RECEIVE
            q = int(usds[i] / p * 1e8) / 1e8
            bal[k] += q
            amount[i] = q
            amount_usd[i] = q * p
    return LedgerResult(
        type=np.array(types, dtype=np.int8),
        pm=np.array(pms, dtype=np.int8),
        amount=np.array(amount),
        amount_usd=np.round(np.array(amount_usd), 2),
    )
