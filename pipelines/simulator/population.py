"""Users and their habits: signup, country, KYC tier, devices, IPs, channels, activity, assets, amounts."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pipelines.simulator.config import (
    ANDROID,
    BANK,
    CARD,
    IOS,
    N_CHAINS,
    US_PER_DAY,
    SimConfig,
)
from pipelines.simulator.strings import StringPool, addresses, hex_ids, ipv4, scramble

# (ISO-2 code, share of users, UTC offset in hours) for the exchange's customer base.
COUNTRIES: tuple[tuple[str, float, int], ...] = (
    ("US", 0.17, -5), ("GB", 0.08, 0), ("DE", 0.07, 1), ("FR", 0.05, 1), ("ES", 0.04, 1),
    ("IT", 0.04, 1), ("NL", 0.03, 1), ("PL", 0.03, 1), ("TR", 0.05, 3), ("NG", 0.04, 1),
    ("ZA", 0.02, 2), ("BR", 0.06, -3), ("AR", 0.03, -3), ("MX", 0.03, -6), ("CA", 0.04, -5),
    ("AU", 0.03, 10), ("IN", 0.06, 5), ("SG", 0.02, 8), ("JP", 0.03, 9), ("KR", 0.04, 9),
    ("PH", 0.03, 8), ("VN", 0.03, 7), ("AE", 0.02, 4), ("UA", 0.02, 2), ("RU", 0.01, 3),
    ("SE", 0.01, 1), ("CH", 0.01, 1),
)  # fmt: skip
COUNTRY_CODES = tuple(c for c, _, _ in COUNTRIES)
# Where VPN and hosting exits geolocate (legit privacy users and fraudsters share them).
HOSTING_COUNTRIES = ("NL", "US", "DE", "SG", "SE", "CH", "GB")
# First octets used by hosting/VPN providers; residential ranges never use them.
HOSTING_OCTETS = (45, 104, 138, 146, 167, 185, 193)
_RESERVED = {0, 10, 100, 127, 169, 172, 192, 198, 203}
# Local hour-of-day activity (0..23) and weekday (Mon..Sun) weights.
HOUR_PROFILE = np.array(
    [3, 2, 1.5, 1, 1, 1.2, 2, 3.5, 5, 6, 6.5, 6.5, 7, 7, 6.5, 6.5, 7, 7.5, 8, 8.5, 8.5, 7.5, 6, 4.5]
)
WEEKDAY_WEIGHTS = np.array([1.05, 1.0, 1.0, 1.0, 1.05, 0.85, 0.8])
# Base popularity of BTC, ETH, SOL, USDC, USDT among users' holdings.
ASSET_POPULARITY = np.array([0.34, 0.26, 0.14, 0.12, 0.14])
NO_TIME = np.iinfo(np.int64).max


def country_index(code: str) -> int:
    """Index of an ISO-2 code in COUNTRIES."""
    return COUNTRY_CODES.index(code)


def country_octets() -> np.ndarray:
    """Three residential first octets per country, fixed (a plausible, not real, allocation)."""
    allowed = [o for o in range(1, 224) if o not in _RESERVED and o not in HOSTING_OCTETS]
    return np.array([[allowed[(3 * i + 41 * k) % len(allowed)] for k in range(3)] for i in range(len(COUNTRIES))])


def random_ips(rng: np.random.Generator, country: np.ndarray, hosting: bool = False) -> np.ndarray:
    """(n, 4) octets of random IPv4 addresses in `country` (residential) or in hosting ranges."""
    n = len(country)
    octets = np.empty((n, 4), dtype=np.int64)
    if hosting:
        octets[:, 0] = np.array(HOSTING_OCTETS)[rng.integers(0, len(HOSTING_OCTETS), n)]
    else:
        octets[:, 0] = country_octets()[country, rng.integers(0, 3, n)]
    octets[:, 1:3] = rng.integers(0, 256, (n, 2))
    octets[:, 3] = rng.integers(1, 255, n)
    return octets


@dataclass
class Pools:
    """String pools that events index into: devices, IP addresses, on-chain addresses."""

    devices: StringPool
    ips: StringPool
    addresses: StringPool


@dataclass
class Population:
    """Per-user arrays (index = user number); fraud rings append their own accounts."""

    signup_us: np.ndarray
    country: np.ndarray
    kyc: np.ndarray
    sessions_per_day: np.ndarray
    usd_scale: np.ndarray
    asset_pref: np.ndarray  # (n, 5) cumulative weights, last column 1
    fiat_user: np.ndarray  # funds with card/bank rather than crypto
    fiat_pm: np.ndarray
    channel: np.ndarray  # primary channel
    mobile_channel: np.ndarray  # IOS or ANDROID: the platform of the user's phone
    web_device: np.ndarray
    phone_device: np.ndarray
    new_phone_device: np.ndarray
    api_device: np.ndarray
    phone_switch_us: np.ndarray  # when the user changes phones (NO_TIME: never)
    home_ip: np.ndarray
    carrier_octets: np.ndarray  # (n, 2): the user's mobile carrier /16
    trip_country: np.ndarray  # -1: no trip in the window
    trip_start_us: np.ndarray
    trip_end_us: np.ndarray
    vpn_user: np.ndarray
    known_addresses: np.ndarray  # (n, N_CHAINS, 2) indices into the address pool
    is_fraudster: np.ndarray  # account opened by a fraud ring

    @property
    def size(self) -> int:
        """Number of accounts."""
        return len(self.signup_us)

    def extend(self, other: Population) -> np.ndarray:
        """Append `other`'s accounts; return their new indices."""
        start = self.size
        for f in fields(self):
            setattr(self, f.name, np.concatenate([getattr(self, f.name), getattr(other, f.name)]))
        return np.arange(start, self.size)


def make_users(
    rng: np.random.Generator,
    cfg: SimConfig,
    pools: Pools,
    n: int,
    signup_us: np.ndarray | None = None,
    fraudster: bool = False,
) -> Population:
    """Draw `n` user profiles; `signup_us` overrides the signup times (fraud rings open fresh accounts)."""
    start, end = cfg.start_us, cfg.end_us
    if signup_us is None:
        # Most customers predate the window (long tail of old accounts), about a fifth sign up during it.
        before = rng.random(n) < 0.8
        age_us = np.minimum(rng.exponential(400, n), 6 * 365) * US_PER_DAY
        signup_us = np.where(before, start - age_us.astype(np.int64), start + rng.integers(0, end - start, n))
    weights = np.array([w for _, w, _ in COUNTRIES])
    country = rng.choice(len(COUNTRIES), n, p=weights / weights.sum())
    kyc = rng.choice(np.array([1, 2, 3], dtype=np.int8), n, p=[0.40, 0.48, 0.12])
    tier_scale = np.array([0.0, 0.5, 1.0, 3.0])[kyc]
    prefs = rng.gamma(ASSET_POPULARITY * 3.0, 1.0, (n, 5))
    prefs = np.cumsum(prefs / prefs.sum(axis=1, keepdims=True), axis=1)
    prefs[:, -1] = 1.0
    channel = rng.choice(4, n, p=[0.38, 0.25, 0.32, 0.05]).astype(np.int8)
    mobile = np.where(channel == IOS, IOS, np.where(channel == ANDROID, ANDROID, rng.choice([IOS, ANDROID], n)))
    n_dev = pools.devices.add(hex_ids("dev_", scramble(rng.integers(0, 2**63, 4 * n).astype(np.uint64), 11)))
    devices = n_dev.reshape(4, n)
    switch = rng.random(n) < 0.12
    phone_switch = np.where(switch, start + rng.integers(0, end - start, n), NO_TIME)
    home_ip = pools.ips.add(ipv4(random_ips(rng, country)))
    carrier = random_ips(rng, country)[:, :2]
    travels = rng.random(n) < 0.10
    trip_country = np.where(travels, (country + rng.integers(1, len(COUNTRIES), n)) % len(COUNTRIES), -1)
    trip_start = start + rng.integers(0, end - start, n)
    trip_end = trip_start + (rng.uniform(2, 14, n) * US_PER_DAY).astype(np.int64)
    known = np.empty((n, N_CHAINS, 2), dtype=np.int64)
    for chain in range(N_CHAINS):
        known[:, chain, :] = pools.addresses.add(addresses(rng, chain, 2 * n)).reshape(n, 2)
    return Population(
        signup_us=signup_us.astype(np.int64),
        country=country.astype(np.int16),
        kyc=kyc,
        sessions_per_day=np.clip(rng.lognormal(np.log(0.25), 1.1, n), 0.01, 8.0),
        usd_scale=120.0 * tier_scale * rng.lognormal(0.0, 1.1, n),
        asset_pref=prefs,
        fiat_user=rng.random(n) < 0.75,
        fiat_pm=rng.choice(np.array([CARD, BANK], dtype=np.int8), n, p=[0.45, 0.55]),
        channel=channel,
        mobile_channel=mobile.astype(np.int8),
        web_device=devices[0],
        phone_device=devices[1],
        new_phone_device=devices[2],
        api_device=devices[3],
        phone_switch_us=phone_switch.astype(np.int64),
        home_ip=home_ip,
        carrier_octets=carrier,
        trip_country=trip_country.astype(np.int16),
        trip_start_us=trip_start.astype(np.int64),
        trip_end_us=trip_end,
        vpn_user=rng.random(n) < 0.04,
        known_addresses=known,
        is_fraudster=np.full(n, fraudster),
    )
