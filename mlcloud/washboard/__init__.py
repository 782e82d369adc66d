"""The washboard: a live status page for the lattice, served by aiohttp.

``create_washboard(settings, token=…)`` builds the web application; :mod:`.state` holds what the page
shows, :mod:`.watcher` feeds it from NATS (events, control interface, model status) and runs
the page's actions (which need the token of :mod:`.access`); :mod:`mlcloud.masking` keeps
secrets out of the browser.
"""

from mlcloud.washboard.app import create_washboard

__all__ = ["create_washboard"]
