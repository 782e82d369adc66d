"""mlcloud's testing API: real servers and the whole stack, started for tests and benchmarks.

Nothing in the running system imports this package; the test suite, the bench and the docs'
screenshot do. Each helper starts the real part (no mocks) on a port the kernel picks:

    bindle.py       :class:`BindleServerProcess`, a Bindle server in a child process
    stack.py        :func:`running_stack`, the whole lattice as ``mlcloud up`` starts it
    screenshot.py   the washboard in the system chromium (browser tests, docs/washboard.png)
"""
