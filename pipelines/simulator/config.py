"""Simulation parameters and the integer codes the vectorized core uses for the contract enums."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from fraud.contracts import Asset, Channel, FraudType, PaymentMethod, TransactionType

# Integer codes: position in these tuples is the code stored in the numpy arrays.
TYPES: tuple[TransactionType, ...] = (
    TransactionType.DEPOSIT,
    TransactionType.WITHDRAWAL,
    TransactionType.BUY,
    TransactionType.SELL,
    TransactionType.SEND,
    TransactionType.RECEIVE,
)
DEPOSIT, WITHDRAWAL, BUY, SELL, SEND, RECEIVE = range(6)

ASSETS: tuple[Asset, ...] = (Asset.BTC, Asset.ETH, Asset.SOL, Asset.USDC, Asset.USDT)
BTC, ETH, SOL, USDC, USDT = range(5)
CASH = USDC  # the exchange's cash leg: fiat on-ramps credit it, balance-funded buys and sells settle in it
# Address format per asset: 0 bitcoin (bech32), 1 EVM (ERC-20 tokens too), 2 solana (base58).
CHAIN_OF_ASSET = (0, 1, 2, 1, 1)
N_CHAINS = 3

PAYMENT_METHODS: tuple[PaymentMethod, ...] = (
    PaymentMethod.CARD,
    PaymentMethod.BANK_TRANSFER,
    PaymentMethod.CRYPTO,
    PaymentMethod.BALANCE,
)
CARD, BANK, CRYPTO, BALANCE = range(4)

CHANNELS: tuple[Channel, ...] = (Channel.WEB, Channel.IOS, Channel.ANDROID, Channel.API)
WEB, IOS, ANDROID, API = range(4)

FRAUD_TYPES: tuple[FraudType, ...] = tuple(FraudType)
LEGIT = -1  # fraud code of a legitimate event

# Event modes for the ledger: legit outflows never exceed the balance; fraud may spend stolen funds.
MODE_LEGIT, MODE_DRAIN, MODE_FIXED = 0, 1, 2

# Default share of fraudulent *transactions* per typology (sums to 1).
DEFAULT_SHARES: dict[FraudType, float] = {
    FraudType.ACCOUNT_TAKEOVER: 0.15,
    FraudType.STOLEN_CARD: 0.16,
    FraudType.CARD_TESTING: 0.15,
    FraudType.MONEY_MULE: 0.15,
    FraudType.STRUCTURING: 0.10,
    FraudType.SANCTIONED_EXPOSURE: 0.07,
    FraudType.BUST_OUT: 0.12,
    FraudType.IMPOSSIBLE_TRAVEL: 0.10,
}

# Label delay in days: lognormal (median, sigma) per typology, and for legitimate transactions.
LABEL_DELAY_DAYS: dict[FraudType | None, tuple[float, float]] = {
    FraudType.ACCOUNT_TAKEOVER: (2.0, 0.7),
    FraudType.STOLEN_CARD: (25.0, 0.4),
    FraudType.CARD_TESTING: (12.0, 0.5),
    FraudType.MONEY_MULE: (20.0, 0.6),
    FraudType.STRUCTURING: (35.0, 0.4),
    FraudType.SANCTIONED_EXPOSURE: (3.0, 0.8),
    FraudType.BUST_OUT: (7.0, 0.5),
    FraudType.IMPOSSIBLE_TRAVEL: (1.5, 0.8),
    None: (4.0, 0.6),
}

US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines a simulated history; equal configs give identical output."""

    seed: int = 7
    users: int = 20_000
    days: int = 30
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    fraud_rate: float = 0.01
    shares: dict[FraudType, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    reporting_threshold_usd: float = 10_000.0

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if self.users < 10 or self.days < 1:
            raise ValueError("need at least 10 users and 1 day")
        if not 0.0 <= self.fraud_rate < 0.5:
            raise ValueError("fraud_rate must be in [0, 0.5)")
        if abs(sum(self.shares.values()) - 1.0) > 1e-6:
            raise ValueError("typology shares must sum to 1")

    @property
    def start_us(self) -> int:
        """Window start in microseconds since the epoch."""
        return int(self.start.timestamp() * US_PER_S)

    @property
    def end_us(self) -> int:
        """Window end (exclusive) in microseconds since the epoch."""
        return self.start_us + self.days * US_PER_DAY
