"""The Cloister contracts on an EVM chain (see docs/evm.md).

``eth_account`` pulls in ``py_ecc``, which raises the interpreter's recursion limit to 100000 when imported; at
that depth deeply nested input overflows the C stack instead of raising ``RecursionError``, the error the
servers' parsers rely on to refuse it. The limit is put back as soon as the import is done.
"""

import sys

_limit = sys.getrecursionlimit()
import eth_account  # noqa: E402, F401

sys.setrecursionlimit(_limit)
