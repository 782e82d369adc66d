"""Signed OCI artifacts for actors and providers: build, push, pull, verify (issue 5)."""
