"""Imported first by an instance's process (:mod:`mlcloud.host.runner`): keeps nats-py from
importing aiohttp.

nats-py's transport module imports aiohttp, if it is installed, for NATS over WebSocket, which
mlcloud never uses (it connects over TCP). aiohttp and what it pulls in (yarl, multidict, attrs,
email, …) are ~10 MB of RSS in every instance process; only the HTTP server provider needs
them, and it imports them itself afterwards. Four processes of the default app save ~40 MB
(docs/performance.md, "Memory").
"""

import sys

if "aiohttp" not in sys.modules and "nats.aio.transport" not in sys.modules:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` now raises ImportError
    try:
        import nats.aio.transport  # noqa: F401  # takes `aiohttp = None`: no WebSocket transport
    finally:
        del sys.modules["aiohttp"]
