"""The decoder: pure functions from stored transactions to their derived rows.

No I/O. The store calls :func:`split_files` on every transaction it commits and
:func:`derive` on every batch (live and ``rederive``); the row tuples follow the column
orders of :mod:`gnosync.store.sql`.
"""

from gnosync.decode.addresses import is_address, package_address
from gnosync.decode.derive import DECODER_VERSION, Derived, StoredTx, derive
from gnosync.decode.files import split_files

__all__ = [
    "DECODER_VERSION",
    "Derived",
    "StoredTx",
    "derive",
    "is_address",
    "package_address",
    "split_files",
]
