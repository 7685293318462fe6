"""The batching core in use: the Cython extension, or its pure-Python twin.

Set ``VOLLEY_NO_EXTENSIONS=1`` to force the pure-Python implementation; it is also used when
the extension cannot be imported.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

__all__ = ["IMPLEMENTATION", "BatchQueue", "gather", "split_rows"]

IMPLEMENTATION: Literal["cython", "python"]

if TYPE_CHECKING:
    from volley.scheduler._batchcore_c import BatchQueue, gather, split_rows

    IMPLEMENTATION = "cython"
elif os.environ.get("VOLLEY_NO_EXTENSIONS", "") in ("", "0"):
    try:
        from volley.scheduler._batchcore_c import BatchQueue, gather, split_rows

        IMPLEMENTATION = "cython"
    except ImportError:
        from volley.scheduler._batchcore_py import BatchQueue, gather, split_rows

        IMPLEMENTATION = "python"
else:
    from volley.scheduler._batchcore_py import BatchQueue, gather, split_rows

    IMPLEMENTATION = "python"
