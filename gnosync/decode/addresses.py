"""Gno addresses: checking a bech32 ``g1...`` string, and a package's own address."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import bech32

HRP = "g"
# "g1", 32 characters for 20 bytes, 6 of checksum: every tm2 account address is this long.
_ADDRESS_LENGTH = 40


def is_address(value: str) -> bool:
    """Whether ``value`` is a bech32 address with hrp ``g`` and a 20-byte payload, its
    checksum verified. Lower case only, as the chain prints addresses."""
    # Most event attributes are not addresses: refuse them before the cache.
    if len(value) != _ADDRESS_LENGTH or not value.startswith("g1"):
        return False
    return _checked(value)


@lru_cache(maxsize=1 << 16)
def _checked(value: str) -> bool:
    if not value.islower():
        return False
    hrp, data = bech32.bech32_decode(value)
    if hrp != HRP or data is None:
        return False
    payload = bech32.convertbits(data, 5, 8, False)
    return payload is not None and len(payload) == 20


@lru_cache(maxsize=1 << 14)
def package_address(path: str) -> str:
    """The address of the package at ``path``, as gnovm derives it (``DerivePkgCryptoAddr``):
    bech32 ``g`` of the first 20 bytes of SHA-256 of ``"pkgPath:" + path``."""
    digest = hashlib.sha256(b"pkgPath:" + path.encode("utf-8", "surrogatepass")).digest()
    return bech32.bech32_encode(HRP, bech32.convertbits(digest[:20], 8, 5))
