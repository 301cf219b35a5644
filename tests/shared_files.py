"""Files some tests read from ``shared/`` beside the checkout (``../shared``).

A clone elsewhere has none of them: a test that needs one skips with a line naming it.
With ``GNOSYNC_REQUIRE_SHARED=1`` (``.ci/run`` sets it) the test fails instead, so a
run that is meant to have them cannot pass without running those tests. Mark a test
``@pytest.mark.needs_shared("gnoland1")`` or call :func:`require` where it reads one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
UPSTREAM_SCHEMA = SHARED / "txindexer" / "schema.graphql"
GNOLAND1 = SHARED / "data" / "gnoland1"
REQUIRE_ENV = "GNOSYNC_REQUIRE_SHARED"

# name -> (the path, what it is, whether it is there)
_FILES = {
    "schema": (UPSTREAM_SCHEMA, "the upstream tx-indexer schema", UPSTREAM_SCHEMA.is_file),
    "gnoland1": (GNOLAND1, "the gnoland1 transaction exports, *.jsonl",
                 lambda: any(GNOLAND1.glob("*.jsonl"))),
}


def missing(name: str) -> str | None:
    """Why the shared file ``name`` cannot be read (one line), or None when it can."""
    path, what, present = _FILES[name]
    if present():
        return None
    return f"needs ../shared/{path.relative_to(SHARED)} ({what}) beside the checkout"


def require(name: str) -> Path:
    """The path of the shared file ``name``; skips the calling test when it is absent
    (fails it when ``GNOSYNC_REQUIRE_SHARED=1``)."""
    reason = missing(name)
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}; {REQUIRE_ENV}=1 says it must be there", pytrace=False)
        pytest.skip(reason)
    return _FILES[name][0]


def gnoland1_files() -> list[Path]:
    """The gnoland1 exports, in name order (see :func:`require`)."""
    return sorted(require("gnoland1").glob("*.jsonl"))
