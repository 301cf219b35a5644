"""tx-indexer's ``where`` filters, evaluated over the devnet's GraphQL-shaped dicts.

The semantics follow tx-indexer's generated ``Eval`` methods:

* every filter given in one input object must hold (AND); ``_and`` needs all of its
  members, ``_or`` at least one (an empty ``_or`` is ignored), ``_not`` negates;
* ``FilterInt``: ``eq``, exclusive ``gt``/``lt``, ``exists``; ``FilterString``: ``eq``,
  ``like`` (a Go regular expression, searched anywhere in the value), ``exists``;
  ``FilterBoolean``: ``eq``, ``exists``; ``FilterTime``: ``eq``, ``before``, ``after``
  (exclusive), ``exists``. A filter on an absent (null) value holds unless it asks
  ``exists: true``;
* a filter on a list field holds when any element matches;
* a filter on a union value (``NestedFilterMessageValue``, ``NestedFilterEvent``) names
  the member types; a value of a named type must match that type's filter, a value of
  a type the filter can name but does not fails, and any other value passes.

The range fields (``Block.height``, ``Transaction.block_height`` and ``index``) behave
as in tx-indexer's storage iterators, which cast bounds to unsigned 64-bit integers: a
negative bound is a huge one, so ``gt: -1`` matches nothing and ``lt: -1`` everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from graphql import GraphQLInputObjectType, GraphQLSchema, get_named_type

from gnosync.devnet.chain import parse_time_ns

__all__ = ["U64_MAX", "Matcher", "compile_filter", "only_ranges", "range_bounds"]

U64_MAX = (1 << 64) - 1
LOGICAL = ("_and", "_or", "_not")

# Fields compared as unsigned integers, per filter input type.
UNSIGNED_FIELDS = {
    "FilterBlock": frozenset({"height"}),
    "FilterTransaction": frozenset({"block_height", "index"}),
}

Matcher = Callable[[Any], bool]


def unsigned(value: int) -> int:
    """``uint64(value)`` as Go converts an int64."""
    return value & U64_MAX


def _always(_: Any) -> bool:
    return True


def _exists_check(exists: bool | None) -> Callable[[Any], bool] | None:
    if exists is None:
        return None
    if exists:
        return lambda value: value is not None
    return lambda value: value is None


def _int_filter(spec: dict[str, Any], as_unsigned: bool) -> Matcher:
    exists = spec.get("exists")
    eq, gt, lt = spec.get("eq"), spec.get("gt"), spec.get("lt")
    if as_unsigned:
        eq = None if eq is None else unsigned(eq)
        gt = None if gt is None else unsigned(gt)
        lt = None if lt is None else unsigned(lt)

    def match(value: Any) -> bool:
        if exists is not None and (value is not None) != exists:
            return False
        if value is None:
            return True
        if eq is not None and value != eq:
            return False
        if gt is not None and value <= gt:
            return False
        if lt is not None and value >= lt:
            return False
        return True

    return match


def _string_filter(spec: dict[str, Any]) -> Matcher:
    exists, eq, like = spec.get("exists"), spec.get("eq"), spec.get("like")
    pattern: re.Pattern[str] | None = None
    bad_pattern = False
    if like is not None:
        try:
            pattern = re.compile(like)
        except re.error:
            bad_pattern = True  # Go's regexp.MatchString errors: nothing matches

    def match(value: Any) -> bool:
        if exists is not None and (value is not None) != exists:
            return False
        if value is None:
            return True
        if eq is not None and value != eq:
            return False
        if bad_pattern:
            return False
        if pattern is not None and pattern.search(value) is None:
            return False
        return True

    return match


def _boolean_filter(spec: dict[str, Any]) -> Matcher:
    exists, eq = spec.get("exists"), spec.get("eq")

    def match(value: Any) -> bool:
        if exists is not None and (value is not None) != exists:
            return False
        if value is None:
            return True
        return eq is None or value == eq

    return match


def _time_filter(spec: dict[str, Any]) -> Matcher:
    exists, eq = spec.get("exists"), spec.get("eq")
    before, after = spec.get("before"), spec.get("after")

    def match(value: Any) -> bool:
        if exists is not None and (value is not None) != exists:
            return False
        if value is None:
            return True
        ns = parse_time_ns(value) if isinstance(value, str) else value
        if eq is not None and ns != eq:
            return False
        if before is not None and not ns < before:
            return False
        if after is not None and not ns > after:
            return False
        return True

    return match


_SCALAR_FILTERS = {
    "FilterString": _string_filter,
    "FilterBoolean": _boolean_filter,
    "FilterTime": _time_filter,
}


def _is_union_filter(input_type: GraphQLInputObjectType) -> bool:
    names = [name for name in input_type.fields if name not in LOGICAL]
    return bool(names) and all(name[:1].isupper() for name in names)


def _on_field(name: str, match: Matcher) -> Matcher:
    """Apply ``match`` to ``obj[name]``; to any element when the value is a list."""

    def check(obj: Any) -> bool:
        value = obj.get(name) if isinstance(obj, dict) else None
        if isinstance(value, list):
            return any(match(element) for element in value)
        return match(value)

    return check


def _nested(match: Matcher) -> Matcher:
    """A nested object filter: a null object matches nothing."""
    return lambda value: value is not None and match(value)


def compile_filter(schema: GraphQLSchema, type_name: str, spec: dict[str, Any] | None) -> Matcher:
    """A predicate over GraphQL-shaped dicts for the input object ``spec`` of ``type_name``."""
    input_type = schema.type_map[type_name]
    assert isinstance(input_type, GraphQLInputObjectType)
    return _compile(input_type, spec or {})


def _compile(input_type: GraphQLInputObjectType, spec: dict[str, Any]) -> Matcher:
    checks: list[Matcher] = []
    union = _is_union_filter(input_type)
    unsigned_fields = UNSIGNED_FIELDS.get(input_type.name, frozenset())
    members: dict[str, Matcher] = {}
    for key, value in spec.items():
        if value is None:
            continue
        if key == "_and":
            parts = [_compile(input_type, part) for part in value if part is not None]
            checks.append(lambda obj, parts=parts: all(part(obj) for part in parts))
        elif key == "_or":
            parts = [_compile(input_type, part) for part in value if part is not None]
            if parts:
                checks.append(lambda obj, parts=parts: any(part(obj) for part in parts))
        elif key == "_not":
            negated = _compile(input_type, value)
            checks.append(lambda obj, negated=negated: not negated(obj))
        else:
            field_type = get_named_type(input_type.fields[key].type)
            assert isinstance(field_type, GraphQLInputObjectType)
            if union:
                members[key] = _compile(field_type, value)
                continue
            if field_type.name == "FilterInt":
                match = _int_filter(value, key in unsigned_fields)
            elif field_type.name in _SCALAR_FILTERS:
                match = _SCALAR_FILTERS[field_type.name](value)
            else:
                match = _nested(_compile(field_type, value))
            checks.append(_on_field(key, match))
    if union and members:
        known = frozenset(name for name in input_type.fields if name not in LOGICAL)

        def union_check(obj: Any) -> bool:
            type_name = obj.get("__typename") if isinstance(obj, dict) else None
            member = members.get(type_name)
            if member is not None:
                return member(obj)
            return type_name not in known

        checks.append(union_check)
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    return lambda obj: all(check(obj) for check in checks)


def range_bounds(spec: dict[str, Any] | None, name: str) -> tuple[int, int]:
    """The inclusive unsigned range the top-level (and ``_and``) bounds on ``name`` allow.

    Everything else in ``spec`` is ANDed with these bounds, so iterating only this range
    never loses a match. An empty range has ``low > high``.
    """
    low, high = 0, U64_MAX
    if not spec:
        return low, high
    bounds = spec.get(name)
    if bounds:
        eq, gt, lt = bounds.get("eq"), bounds.get("gt"), bounds.get("lt")
        if eq is not None:
            low = max(low, unsigned(eq))
            high = min(high, unsigned(eq))
        if gt is not None:
            low = max(low, unsigned(gt) + 1)
        if lt is not None:
            high = min(high, unsigned(lt) - 1)
    for part in spec.get("_and") or ():
        if part:
            part_low, part_high = range_bounds(part, name)
            low, high = max(low, part_low), min(high, part_high)
    return low, high


def only_ranges(spec: dict[str, Any] | None, names: frozenset[str]) -> bool:
    """Whether ``spec`` holds nothing but ``eq``/``gt``/``lt`` bounds on ``names``.

    Such a filter is fully described by :func:`range_bounds`; anything else needs the
    compiled predicate.
    """
    if not spec:
        return True
    for key, value in spec.items():
        if value is None:
            continue
        if key not in names:
            return False
        if any(v is not None for k, v in value.items() if k not in ("eq", "gt", "lt")):
            return False
    return True
