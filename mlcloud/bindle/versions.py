"""SemVer range matching for the query API's ``version`` filter, with npm's rules.

The reference server parses the filter with ``VersionReq::parse_compat(req, Compat::Npm)``, so a
bare ``1.2.3`` means exactly that version (not ``^1.2.3``), ``1.2`` means any 1.2.x, and ``^``,
``~``, comparison operators, ``x``/``*`` wildcards, hyphen ranges and ``||`` work as in npm. An
empty filter matches everything; a filter that does not parse matches nothing.
"""

from __future__ import annotations

import re

import semver

_PART = r"(?:0|[1-9]\d*|[xX*])"
_COMPARATOR = re.compile(
    rf"^(?P<op>\^|~>?|>=|<=|>|<|=)?\s*v?(?P<major>{_PART})(?:\.(?P<minor>{_PART}))?"
    rf"(?:\.(?P<patch>{_PART}))?(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)

Bound = tuple[str, semver.Version]


class RangeError(ValueError):
    pass


def _num(part: str | None) -> int | None:
    return None if part is None or part in ("x", "X", "*") else int(part)


def _comparator(text: str) -> list[Bound]:
    m = _COMPARATOR.match(text)
    if not m:
        raise RangeError(f"invalid comparator {text!r}")
    op = m["op"] or "="
    major, minor, patch = _num(m["major"]), _num(m["minor"]), _num(m["patch"])
    pre = m["pre"]
    if major is None:
        return [] if op in ("=", ">=", "<=", "^", "~", "~>") else [("<", semver.Version(0))]
    lo = semver.Version(major, minor or 0, patch or 0, prerelease=pre)
    if minor is None:
        upper = semver.Version(major + 1)
    elif patch is None:
        upper = semver.Version(major, minor + 1)
    else:
        upper = None
    if op == "=":
        return [(">=", lo), ("<", upper)] if upper else [("==", lo)]
    if op == "^":
        if major > 0 or minor is None:
            cap = semver.Version(major + 1)
        elif minor > 0 or patch is None:
            cap = semver.Version(0, minor + 1)
        else:
            cap = semver.Version(0, 0, patch + 1)
        return [(">=", lo), ("<", cap)]
    if op in ("~", "~>"):
        cap = semver.Version(major + 1) if minor is None else semver.Version(major, minor + 1)
        return [(">=", lo), ("<", cap)]
    if op == ">":
        return [(">=", upper)] if upper else [(">", lo)]
    if op == "<=":
        return [("<", upper)] if upper else [("<=", lo)]
    return [(op, lo)]  # ">=" and "<" mean the same with a partial version


def parse_range(requirement: str) -> list[list[Bound]]:
    """``requirement`` as alternatives (``||``), each a list of bounds that must all hold."""
    alternatives = []
    for alt in requirement.split("||"):
        alt = alt.strip()
        hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", alt)
        if hyphen:
            parts = [f">={hyphen[1]}", f"<={hyphen[2]}"]
        else:
            # npm allows "> 1.2" with a space and separates comparators by spaces or commas.
            alt = re.sub(r"(\^|~>?|>=|<=|>|<|=)\s+", r"\1", alt)
            parts = [p for p in re.split(r"[\s,]+", alt) if p]
        bounds: list[Bound] = []
        for part in parts:
            bounds.extend(_comparator(part))
        alternatives.append(bounds)
    return alternatives


def _holds(version: semver.Version, bound: Bound) -> bool:
    op, other = bound
    cmp = version.compare(other)
    return {"==": cmp == 0, ">": cmp > 0, ">=": cmp >= 0, "<": cmp < 0, "<=": cmp <= 0}[op]


def version_matches(version: str, requirement: str) -> bool:
    if not requirement.strip():
        return True
    try:
        parsed = semver.Version.parse(version)
        alternatives = parse_range(requirement)
    except (ValueError, TypeError):
        return False
    return any(all(_holds(parsed, b) for b in alt) for alt in alternatives)
