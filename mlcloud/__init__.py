"""mlcloud: a wasmCloud-style lattice of actors and capability providers for ML inference."""

__version__ = "0.1.0"
