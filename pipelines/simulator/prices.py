"""Per-asset price paths: correlated minute-level geometric Brownian motion with rare jumps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.simulator.config import BTC, ETH, SOL, US_PER_S, USDC, USDT

# (start price, annualized volatility, beta to the crypto market factor)
_ASSET_PARAMS = {
    BTC: (64_000.0, 0.55, 0.85),
    ETH: (3_200.0, 0.70, 0.80),
    SOL: (150.0, 0.95, 0.70),
}
_MINUTES_PER_YEAR = 365.25 * 24 * 60


@dataclass(frozen=True)
class PricePath:
    """Minute prices for each asset from `start_us`; `at` looks prices up for event times."""

    start_us: int
    prices: np.ndarray  # shape (n_assets, n_minutes)

    def at(self, asset: np.ndarray, t_us: np.ndarray) -> np.ndarray:
        """Price of `asset[i]` at time `t_us[i]` (USD per unit)."""
        minute = np.clip((t_us - self.start_us) // (60 * US_PER_S), 0, self.prices.shape[1] - 1)
        return self.prices[asset, minute]


def price_path(rng: np.random.Generator, start_us: int, days: int) -> PricePath:
    """Simulate prices for `days` days: BTC, ETH and SOL share a market factor; USDC is 1, USDT near 1."""
    n = days * 24 * 60
    dt = 1.0 / _MINUTES_PER_YEAR
    market = rng.standard_normal(n)
    prices = np.ones((5, n))
    for asset, (p0, vol, beta) in _ASSET_PARAMS.items():
        idio = rng.standard_normal(n)
        shocks = beta * market + np.sqrt(1.0 - beta**2) * idio
        log_ret = -0.5 * vol**2 * dt + vol * np.sqrt(dt) * shocks
        # Rare jumps (news, liquidations): about one a week, +-3..8 %.
        jumps = rng.random(n) < 1.0 / (7 * 24 * 60)
        log_ret += jumps * rng.choice([-1.0, 1.0], n) * rng.uniform(0.03, 0.08, n)
        prices[asset] = p0 * np.exp(np.cumsum(log_ret))
    # USDT trades within a few basis points of its peg: smoothed noise (a 4-hour moving average).
    window = 240
    smooth = np.convolve(rng.standard_normal(n + window), np.ones(window) / window, mode="valid")[:n]
    prices[USDT] = 1.0 + np.clip(smooth * 0.004, -0.003, 0.003)
    prices[USDC] = 1.0
    return PricePath(start_us=start_us, prices=prices)
