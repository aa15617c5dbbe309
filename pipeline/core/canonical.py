"""RFC 8785 (JCS) canonical JSON: the one encoding that turns an event into the bytes hashed.

Any JCS implementation in any language gives the same bytes for the same JSON
value, which is what lets an auditor recompute a leaf hash without our code.
"""

from __future__ import annotations

from typing import Any

import rfc8785

from pipeline.errors import InvalidEvent


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 canonical form of a JSON value.

    >>> canonical_bytes({"b": [1, 2.5, "x"], "a": None})
    b'{"a":null,"b":[1,2.5,"x"]}'
    """
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"not representable as RFC 8785 canonical JSON: {exc}") from None
