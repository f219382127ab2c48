"""Vectorized string making: ids, on-chain addresses, IP addresses, and a pool to index strings by int."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HEX_TABLE = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
_BECH32 = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_HEX = b"0123456789abcdef"
_BASE58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def scramble(values: np.ndarray, salt: int) -> np.ndarray:
    """A bijective mix of uint64 values (splitmix64 finalizer): distinct inputs give distinct outputs."""
    with np.errstate(over="ignore"):
        x = values.astype(np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def to_pa(strings: np.ndarray) -> pa.StringArray:
    """A numpy bytes array ('S' dtype, ASCII) as an Arrow string array."""
    return pc.cast(pa.array(strings, type=pa.binary()), pa.string())


def hex_ids(prefix: str, values: np.ndarray) -> np.ndarray:
    """`prefix` + 16 hex digits of each uint64, as a numpy bytes array."""
    raw = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    digits = _HEX_TABLE[raw].view("S16").ravel()
    return np.strings.add(prefix.encode(), digits)


def random_strings(rng: np.random.Generator, n: int, alphabet: bytes, length: int) -> np.ndarray:
    """`n` random strings of `length` characters from `alphabet`, as a numpy bytes array."""
    table = np.frombuffer(alphabet, dtype=np.uint8)
    chars = table[rng.integers(0, len(table), size=(n, length))]
    return np.ascontiguousarray(chars).view(f"S{length}").ravel()


def addresses(rng: np.random.Generator, chain: int, n: int) -> np.ndarray:
    """`n` fresh, plausible on-chain addresses: 0 bech32 (BTC), 1 EVM (ETH, ERC-20), 2 base58 (SOL)."""
    if chain == 0:
        return np.strings.add(b"bc1q", random_strings(rng, n, _BECH32, 38))
    if chain == 1:
        return np.strings.add(b"0x", random_strings(rng, n, _HEX, 40))
    return random_strings(rng, n, _BASE58, 44)


def ipv4(octets: np.ndarray) -> pa.StringArray:
    """Dotted-quad strings from an (n, 4) array of octets."""
    parts = [pc.cast(pa.array(octets[:, i].astype(np.int64)), pa.string()) for i in range(4)]
    return pc.binary_join_element_wise(*parts, ".")


class StringPool:
    """Append string arrays, get back int indices; `take` turns index arrays (-1 = null) into strings."""

    def __init__(self) -> None:
        self._chunks: list[pa.Array] = []
        self._size = 0
        self._all: pa.Array | None = None

    def __len__(self) -> int:
        return self._size

    def add(self, values: np.ndarray | pa.Array) -> np.ndarray:
        """Add strings; return their indices."""
        arr = values if isinstance(values, pa.Array) else to_pa(values)
        start = self._size
        self._chunks.append(arr)
        self._size += len(arr)
        self._all = None
        return np.arange(start, self._size, dtype=np.int64)

    def take(self, idx: np.ndarray) -> pa.Array:
        """Strings at `idx`; negative indices give nulls."""
        if self._all is None:
            self._all = pa.concat_arrays(self._chunks) if self._chunks else pa.array([], pa.string())
        mask = idx < 0
        indices = pa.array(np.where(mask, 0, idx), mask=mask)
        return self._all.take(indices)
