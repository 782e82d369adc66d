"""The routes a link's registry serves: the link's values, changed by model repository loads and unloads.

The link's values are the declared routes (route → bindle id). ``load`` (a route, optionally with
another bindle) and ``unload`` change what is served on top of them, through the registry's one
path (:meth:`~mlcloud.inference.ModelRegistry.apply`: load, then swap, then drop the old), as
Triton's explicit model control does. A change is kept until the link's values for that route
change (the newer word wins) or the provider restarts (the link is then the whole truth again).
"""

from __future__ import annotations

from mlcloud.inference.config import LinkModels


class RouteTable:
    def __init__(self, declared: LinkModels) -> None:
        self.declared = declared
        self.changes: dict[str, str | None] = {}  # route → bindle id loaded, or None: unloaded

    def relink(self, declared: LinkModels) -> None:
        """New link values: a route whose value changed forgets its repository change."""
        old = self.declared.routes
        for route in [r for r in self.changes if old.get(r) != declared.routes.get(r)]:
            del self.changes[route]
        self.declared = declared

    @property
    def routes(self) -> dict[str, str]:
        """What the registry should serve now."""
        routes = dict(self.declared.routes)
        for route, bindle_id in self.changes.items():
            if bindle_id is None:
                routes.pop(route, None)
            else:
                routes[route] = bindle_id
        return routes

    @property
    def engines(self) -> dict[str, str]:
        return self.declared.engines

    @property
    def unloaded(self) -> dict[str, str]:
        """Declared routes that an unload took out of service, with the bindle each would serve."""
        return {r: self.declared.routes[r] for r, b in self.changes.items() if b is None and r in self.declared.routes}

    def load(self, route: str, bindle_id: str) -> None:
        if self.declared.routes.get(route) == bindle_id:
            self.changes.pop(route, None)
        else:
            self.changes[route] = bindle_id

    def unload(self, route: str) -> None:
        if route in self.declared.routes:
            self.changes[route] = None
        else:
            self.changes.pop(route, None)
