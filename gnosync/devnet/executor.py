"""The devnet's GraphQL layer: the schema, request validation, and a small executor.

Documents are parsed and validated with graphql-core against the devnet schema
(``schema.graphql``), and the result is cached per query string. Execution does NOT use
graphql-core's executor, for two reasons:

* graphql-core's ``Int`` is 32-bit, as the GraphQL spec says, while gqlgen's (and so
  tx-indexer's) is 64-bit: coin amounts and gas values exceed 2^31. The schema built
  here swaps in a 64-bit ``Int`` for validation and coercion, and nothing serializes
  through graphql-core on the way out.
* graphql-core's executor resolves every field of every object through Python
  callbacks and awaitables, far too slow to serve tens of thousands of blocks a second.

Instead, the chain hands out plain dicts shaped like tx-indexer's objects, and a
projector compiled from the operation's selection set copies the selected fields:
aliases, ``__typename``, inline and named fragments (on union members, chosen by the
value's ``__typename``), ``@skip``/``@include``, variables and inline arguments.
Introspection queries (``__schema``, ``__type``) go to graphql-core's executor, which
handles them without touching chain data.

gnosync's own queries skip even the projector: :mod:`gnosync.devnet.fragments` answers
them from JSON encoded once per height (the fast path), with the same answers after
JSON parsing. ``Executor(chain, fast_path=False)`` turns that off.

Subscriptions (``subscription { getBlocks(where: ...) {...} }``) are prepared here
(:meth:`Executor.subscription`) and served over websockets by
:mod:`gnosync.devnet.subscriptions`.

HTTP statuses and error shapes follow gqlgen: a document that does not parse or
validate, or variables that do not coerce, get HTTP 422 with ``data: null``; resolver
errors (the element cap) come back with HTTP 200 beside the data they cut short.
"""

from __future__ import annotations

import importlib.resources
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from graphql import (
    BooleanValueNode,
    DocumentNode,
    EnumValueNode,
    FieldNode,
    FloatValueNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    build_schema,
    execute_sync,
    parse,
    type_from_ast,
    validate,
)
from graphql.type.definition import GraphQLInputType, GraphQLOutputType

from gnosync.devnet.chain import Chain, json_bytes, parse_time_ns
from gnosync.devnet.filters import U64_MAX, Matcher, compile_filter, only_ranges, range_bounds
from gnosync.devnet.fragments import Plan, plan_for

__all__ = ["DEFAULT_MAX_ELEMENTS", "Executor", "Subscription", "devnet_schema", "schema_sdl"]

DEFAULT_MAX_ELEMENTS = 10_000
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_DOCUMENT_CACHE_SIZE = 256

# ----------------------------------------------------------------------- schema


def schema_sdl() -> str:
    """The text of the devnet's ``schema.graphql``."""
    return importlib.resources.files("gnosync.devnet").joinpath("schema.graphql").read_text("utf-8")


def _int64_value(value: Any) -> int:
    # gqlgen's UnmarshalInt accepts JSON integers and decimal strings.
    if isinstance(value, bool):
        raise GraphQLError(f"Int cannot represent non-integer value: {value!r}")
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise GraphQLError(f"Int cannot represent non-integer value: {value!r}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise GraphQLError(f"Int cannot represent non 64-bit signed integer value: {value}")
    return value


def _int64_literal(node: ValueNode, _variables: Any = None) -> int:
    if not isinstance(node, IntValueNode):
        raise GraphQLError("Int cannot represent non-integer value", node)
    value = int(node.value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise GraphQLError(
            f"Int cannot represent non 64-bit signed integer value: {node.value}", node
        )
    return value


def _time_value(value: Any) -> int:
    if not isinstance(value, str):
        raise GraphQLError(f"Time must be an RFC 3339 string, got {value!r}")
    try:
        return parse_time_ns(value)
    except ValueError as exc:
        raise GraphQLError(str(exc)) from None


def _time_literal(node: ValueNode, _variables: Any = None) -> int:
    if not isinstance(node, StringValueNode):
        raise GraphQLError("Time must be an RFC 3339 string", node)
    return _time_value(node.value)


def _swap(type_: Any, replacements: dict[str, Any]) -> Any:
    if isinstance(type_, GraphQLNonNull):
        return GraphQLNonNull(_swap(type_.of_type, replacements))
    if isinstance(type_, GraphQLList):
        return GraphQLList(_swap(type_.of_type, replacements))
    return replacements.get(type_.name, type_)


def build_devnet_schema(sdl: str) -> GraphQLSchema:
    """``sdl`` as a schema whose ``Int`` is 64-bit and whose ``Time`` parses RFC 3339."""
    built = build_schema(sdl)
    # graphql-core reserves the name "Int" for its 32-bit scalar; build the 64-bit one
    # under another name and rename it once it exists.
    int64 = GraphQLScalarType(
        "Int64",
        serialize=_int64_value,
        parse_value=_int64_value,
        parse_literal=_int64_literal,
        description="A 64-bit signed integer, as gqlgen's Int.",
    )
    int64.name = "Int"
    time_type = built.type_map["Time"]
    time_scalar = GraphQLScalarType(
        "Time",
        serialize=lambda value: value,
        parse_value=_time_value,
        parse_literal=_time_literal,
        description=time_type.description,
    )
    replacements = {"Int": int64, "Time": time_scalar}
    for name, named in built.type_map.items():
        if name.startswith("__"):
            continue
        if isinstance(named, GraphQLObjectType):
            for field in named.fields.values():
                field.type = _swap(field.type, replacements)
                for argument in field.args.values():
                    argument.type = _swap(argument.type, replacements)
        elif isinstance(named, GraphQLInputObjectType):
            for input_field in named.fields.values():
                input_field.type = _swap(input_field.type, replacements)
    types = [
        named
        for name, named in built.type_map.items()
        if not name.startswith("__") and name not in replacements and named is not GraphQLInt
    ]
    return GraphQLSchema(
        query=built.query_type,
        subscription=built.subscription_type,
        types=[*types, int64, time_scalar],
    )


_schema_lock = threading.Lock()
_schema: GraphQLSchema | None = None


def devnet_schema() -> GraphQLSchema:
    """The devnet schema (built once per process)."""
    global _schema
    with _schema_lock:
        if _schema is None:
            _schema = build_devnet_schema(schema_sdl())
        return _schema


# ------------------------------------------------------------------------ errors


class ResolverError(Exception):
    """A field's resolver failed; the field is null and the error is reported (HTTP 200)."""


class RequestError(Exception):
    """A request gqlgen would reject before running it (HTTP 422 unless told)."""

    def __init__(self, errors: list[dict[str, Any]], status: int = 422):
        super().__init__(errors[0]["message"] if errors else "request error")
        self.errors = errors
        self.status = status


def _error(message: str, code: str | None = None, nodes: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message}
    locations = []
    for node in nodes or ():
        loc = getattr(node, "loc", None)
        if loc is not None and loc.source is not None:
            location = loc.source.get_location(loc.start)
            locations.append({"line": location.line, "column": location.column})
    if locations:
        error["locations"] = locations
    if code:
        error["extensions"] = {"code": code}
    return error


def _graphql_error(error: GraphQLError, code: str) -> dict[str, Any]:
    formatted: dict[str, Any] = {"message": error.message}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    formatted["extensions"] = {"code": code}
    return formatted


# ----------------------------------------------------------------- input values


class _Missing:
    pass


MISSING = _Missing()


def _unwrap_input(type_: Any) -> tuple[Any, bool]:
    if isinstance(type_, GraphQLNonNull):
        return type_.of_type, True
    return type_, False


def coerce_input(value: Any, type_: GraphQLInputType, path: str) -> Any:
    """A JSON variable value coerced to ``type_``, as gqlgen validates variables."""
    inner, non_null = _unwrap_input(type_)
    if value is None:
        if non_null:
            raise ValueError(f"{path} must not be null")
        return None
    if isinstance(inner, GraphQLList):
        if isinstance(value, list):
            return [
                coerce_input(item, inner.of_type, f"{path}[{i}]") for i, item in enumerate(value)
            ]
        return [coerce_input(value, inner.of_type, f"{path}[0]")]
    if isinstance(inner, GraphQLInputObjectType):
        if not isinstance(value, dict):
            raise ValueError(f"{path} must be an object of type {inner.name}")
        out: dict[str, Any] = {}
        for key in value:
            if key not in inner.fields:
                raise ValueError(f"{path}.{key}: unknown field of {inner.name}")
        for name, input_field in inner.fields.items():
            if name in value:
                out[name] = coerce_input(value[name], input_field.type, f"{path}.{name}")
            elif isinstance(input_field.type, GraphQLNonNull):
                raise ValueError(f"{path}.{name} must be defined")
        return out
    if isinstance(inner, GraphQLEnumType):
        if not isinstance(value, str) or value not in inner.values:
            raise ValueError(f"{path}: {value!r} is not a valid {inner.name}")
        return value
    assert isinstance(inner, GraphQLScalarType)
    try:
        return inner.parse_value(value)
    except (GraphQLError, ValueError, TypeError) as exc:
        message = exc.message if isinstance(exc, GraphQLError) else str(exc)
        raise ValueError(f"{path}: {message}") from None


def literal_value(node: ValueNode, type_: Any, variables: dict[str, Any]) -> Any:
    """The value of an (already validated) argument literal; MISSING for an unset variable."""
    if isinstance(node, VariableNode):
        return variables.get(node.name.value, MISSING)
    inner, _ = _unwrap_input(type_)
    if isinstance(node, NullValueNode):
        return None
    if isinstance(inner, GraphQLList):
        nodes = node.values if isinstance(node, ListValueNode) else (node,)
        out = []
        for item in nodes:
            value = literal_value(item, inner.of_type, variables)
            out.append(None if value is MISSING else value)
        return out
    if isinstance(inner, GraphQLInputObjectType):
        assert isinstance(node, ObjectValueNode)
        result: dict[str, Any] = {}
        for field_node in node.fields:
            name = field_node.name.value
            value = literal_value(field_node.value, inner.fields[name].type, variables)
            if value is not MISSING:
                result[name] = value
        return result
    if isinstance(node, EnumValueNode):
        return node.value
    if isinstance(inner, GraphQLScalarType) and inner.name in ("Int", "Time"):
        return inner.parse_literal(node)
    if isinstance(node, (StringValueNode, BooleanValueNode)):
        return node.value
    if isinstance(node, IntValueNode):
        return int(node.value)
    if isinstance(node, FloatValueNode):
        return float(node.value)
    raise ValueError(f"unsupported literal {node.kind}")


# -------------------------------------------------------------------- projection

Projector = Callable[[Any], Any]
Amend = Callable[[str, Any], Any]  # (root field, its answer) -> the answer to serve


class _Compiler:
    """Compiles selection sets into projectors over GraphQL-shaped dicts."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
    ):
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def included(self, node: Any) -> bool:
        for directive in node.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                continue
            condition = True
            for argument in directive.arguments:
                if argument.name.value == "if":
                    condition = bool(
                        literal_value(
                            argument.value, GraphQLNonNull(GraphQLBoolean), self.variables
                        )
                    )
            if name == "skip" and condition:
                return False
            if name == "include" and not condition:
                return False
        return True

    def applies(self, condition: Any, object_type: GraphQLObjectType) -> bool:
        if condition is None:
            return True
        name = condition.name.value
        if name == object_type.name:
            return True
        conditional = self.schema.get_type(name)
        return isinstance(conditional, GraphQLUnionType) and object_type in conditional.types

    def collect(
        self,
        object_type: GraphQLObjectType,
        selection_set: SelectionSetNode,
        fields: dict[str, list[FieldNode]] | None = None,
        visited: set[str] | None = None,
    ) -> dict[str, list[FieldNode]]:
        """GraphQL's CollectFields: response key -> field nodes, in document order."""
        fields = {} if fields is None else fields
        visited = set() if visited is None else visited
        for selection in selection_set.selections:
            if not self.included(selection):
                continue
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                fields.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if self.applies(selection.type_condition, object_type):
                    self.collect(object_type, selection.selection_set, fields, visited)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in visited:
                    continue
                visited.add(name)
                fragment = self.fragments[name]
                if self.applies(fragment.type_condition, object_type):
                    self.collect(object_type, fragment.selection_set, fields, visited)
        return fields

    def object_projector(
        self, object_type: GraphQLObjectType, selection_sets: list[SelectionSetNode]
    ) -> Projector:
        fields: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()
        for selection_set in selection_sets:
            self.collect(object_type, selection_set, fields, visited)
        constants: list[tuple[str, Any]] = []
        plain: list[tuple[str, str]] = []
        nested: list[tuple[str, str, Projector]] = []
        order: list[str] = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            order.append(key)
            if name == "__typename":
                constants.append((key, object_type.name))
                continue
            field = object_type.fields[name]
            sub_sets = [node.selection_set for node in nodes if node.selection_set is not None]
            projector = self.value_projector(field.type, sub_sets)
            if projector is None:
                plain.append((key, name))
            else:
                nested.append((key, name, projector))
        if not constants and not nested and all(key == name for key, name in plain):
            names = tuple(name for _, name in plain)
            return lambda obj: {name: obj[name] for name in names}

        def project(obj: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in constants:
                out[key] = value
            for key, name in plain:
                out[key] = obj[name]
            for key, name, projector in nested:
                out[key] = projector(obj[name])
            return out

        if order == [key for key, _ in constants] + [key for key, _ in plain] + [
            key for key, _, _ in nested
        ]:
            return project

        def ordered(obj: Any) -> dict[str, Any]:
            out = project(obj)
            return {key: out[key] for key in order}

        return ordered

    def value_projector(
        self, type_: GraphQLOutputType, selection_sets: list[SelectionSetNode]
    ) -> Projector | None:
        """How to copy a value of ``type_``; None for leaves (copied as they are)."""
        if isinstance(type_, GraphQLNonNull):
            return self.value_projector(type_.of_type, selection_sets)
        if isinstance(type_, GraphQLList):
            item = self.value_projector(type_.of_type, selection_sets)
            if item is None:
                return None
            return lambda value: (
                None if value is None else [None if x is None else item(x) for x in value]
            )
        if isinstance(type_, GraphQLObjectType):
            projector = self.object_projector(type_, selection_sets)
            return lambda value: None if value is None else projector(value)
        if isinstance(type_, GraphQLUnionType):
            by_type = {
                member.name: self.object_projector(member, selection_sets) for member in type_.types
            }

            def project_union(value: Any) -> Any:
                if value is None:
                    return None
                return by_type[value["__typename"]](value)

            return project_union
        return None


# ------------------------------------------------------------------------ executor


_UNPLANNED: Any = object()


class _Document:
    __slots__ = ("document", "errors", "fragments", "operations", "plan", "status")

    def __init__(
        self, document: DocumentNode | None, errors: list[dict[str, Any]], status: int = 422
    ):
        self.document = document
        self.errors = errors
        self.status = status
        self.fragments: dict[str, FragmentDefinitionNode] = {}
        self.operations: list[OperationDefinitionNode] = []
        self.plan: Plan | None = _UNPLANNED  # the fast path's plan, found on first use
        if document is not None:
            for definition in document.definitions:
                if isinstance(definition, FragmentDefinitionNode):
                    self.fragments[definition.name.value] = definition
                elif isinstance(definition, OperationDefinitionNode):
                    self.operations.append(definition)


class Subscription:
    """A prepared ``getBlocks`` subscription: which blocks it wants and their shape."""

    __slots__ = ("key", "match", "projector")

    def __init__(self, key: str, match: Matcher, projector: Projector):
        self.key = key
        self.match = match
        self.projector = projector

    def payload(self, block: dict[str, Any]) -> bytes | None:
        """The response payload (``{"data": {...}}``) pushing ``block``, encoded; None
        when the subscription's ``where`` does not match it."""
        if not self.match(block):
            return None
        return json_bytes({"data": {self.key: self.projector(block)}})


class Executor:
    """Answers GraphQL requests about a :class:`Chain` the way tx-indexer does."""

    def __init__(
        self,
        chain: Chain,
        *,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        schema: GraphQLSchema | None = None,
        fast_path: bool = True,
    ):
        if max_elements < 1:
            raise ValueError(f"max_elements must be >= 1, got {max_elements}")
        self.chain = chain
        self.max_elements = max_elements
        self.schema = schema or devnet_schema()
        self.fast_path = fast_path
        self._documents: OrderedDict[str, _Document] = OrderedDict()
        self._documents_lock = threading.Lock()

    # ---------------------------------------------------------------- documents

    def document(self, query: str) -> _Document:
        """The parsed and validated document for ``query`` (cached)."""
        with self._documents_lock:
            cached = self._documents.get(query)
            if cached is not None:
                self._documents.move_to_end(query)
                return cached
        try:
            document = parse(query)
        except GraphQLError as exc:
            prepared = _Document(None, [_graphql_error(exc, "GRAPHQL_PARSE_FAILED")])
        else:
            errors = validate(self.schema, document)
            prepared = _Document(
                document, [_graphql_error(error, "GRAPHQL_VALIDATION_FAILED") for error in errors]
            )
        with self._documents_lock:
            self._documents[query] = prepared
            while len(self._documents) > _DOCUMENT_CACHE_SIZE:
                self._documents.popitem(last=False)
        return prepared

    # ----------------------------------------------------------------- requests

    def execute(
        self,
        query: Any,
        variables: Any = None,
        operation_name: Any = None,
        *,
        amend: Amend | None = None,
    ) -> tuple[int, bytes]:
        """HTTP status and JSON body for one GraphQL request.

        ``amend(field, value)``, when given, sees the answer of each root field
        (``latestBlockHeight``, ``getBlocks``, ``getTransactions``) before it is encoded
        and returns the value to serve; lists it gets are its own to change in place.
        The whole request runs under the chain's lock, so it sees one consistent chain
        even while another thread grows or resets it.
        """
        if amend is None and self.fast_path:
            body = self._fast(query, variables, operation_name)
            if body is not None:
                return 200, body
        try:
            with self.chain.lock:
                data, errors = self._run(query, variables, operation_name, amend)
        except RequestError as exc:
            return exc.status, orjson.dumps({"errors": exc.errors, "data": None})
        body: dict[str, Any] = {}
        if errors:
            body["errors"] = errors
        body["data"] = data
        return 200, json_bytes(body)

    def plan(self, query: Any) -> Plan | None:
        """The fast path's plan for ``query`` (None: the general executor answers it)."""
        if not isinstance(query, str):
            return None
        prepared = self.document(query)
        plan = prepared.plan
        if plan is _UNPLANNED:
            plan = None
            if not prepared.errors and len(prepared.operations) == 1:
                plan = plan_for(prepared.operations[0], prepared.fragments)
            prepared.plan = plan
        return plan

    def _fast(self, query: Any, variables: Any, operation_name: Any) -> bytes | None:
        """The body of a request the fast path answers, or None."""
        plan = self.plan(query)
        if plan is None:
            return None
        if operation_name is not None and operation_name != plan.operation_name:
            return None
        if variables is None:
            variables = {}
        elif not isinstance(variables, dict):
            return None
        bounds = plan.bounds(variables)
        if bounds is None:
            return None
        with self.chain.lock:
            return self.chain.fragments.answer(plan, bounds, self.max_elements)

    def subscription(
        self, query: Any, variables: Any = None, operation_name: Any = None
    ) -> Subscription | None:
        """The subscription a websocket ``subscribe``/``start`` message asks for; None
        when its operation is a query (answer it with :meth:`execute`).

        Raises :class:`RequestError` for a document that does not parse or validate, or
        variables that do not coerce.
        """
        prepared, operation, variables = self._request(query, variables, operation_name)
        if operation.operation == OperationType.QUERY:
            return None
        coerced = self._variables(operation, variables)
        subscription_type = self.schema.subscription_type
        if operation.operation != OperationType.SUBSCRIPTION or subscription_type is None:
            raise RequestError(
                [
                    _error(
                        f"{operation.operation.value} operations are not served",
                        "GRAPHQL_VALIDATION_FAILED",
                        [operation],
                    )
                ]
            )
        compiler = _Compiler(self.schema, prepared.fragments, coerced)
        fields = compiler.collect(subscription_type, operation.selection_set)
        if len(fields) != 1:
            raise RequestError(
                [_error("a subscription selects exactly one field", "GRAPHQL_VALIDATION_FAILED")]
            )
        (key, nodes), = fields.items()
        node = nodes[0]
        name = node.name.value
        if name != "getBlocks":  # validated against the schema: nothing else exists
            raise RequestError([_error(f"subscription {name} is not served", None, [node])])
        field = subscription_type.fields[name]
        args = self._arguments(field, node, coerced)
        projector = compiler.value_projector(
            field.type, [n.selection_set for n in nodes if n.selection_set is not None]
        )
        assert projector is not None
        match = compile_filter(self.schema, "FilterBlock", args.get("where") or {})
        return Subscription(key, match, projector)

    def root_fields(self, query: Any, operation_name: Any = None) -> frozenset[str]:
        """The root fields a request asks for (empty when it would not run).

        Fields under ``@skip``/``@include`` count as asked for.
        """
        if not isinstance(query, str) or not query.strip():
            return frozenset()
        prepared = self.document(query)
        if prepared.errors:
            return frozenset()
        try:
            operation = self._operation(
                prepared, operation_name if isinstance(operation_name, str) else None
            )
        except RequestError:
            return frozenset()
        names: set[str] = set()
        pending = [operation.selection_set]
        seen: set[str] = set()
        while pending:
            for selection in pending.pop().selections:
                if isinstance(selection, FieldNode):
                    names.add(selection.name.value)
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name not in seen and name in prepared.fragments:
                        seen.add(name)
                        pending.append(prepared.fragments[name].selection_set)
        return frozenset(names)

    def _request(self, query: Any, variables: Any, operation_name: Any) -> tuple[Any, Any, dict]:
        """A request's parsed document, chosen operation and variables (``{}`` if none).

        Raises :class:`RequestError` as gqlgen answers: no document, variables that are
        not an object, a document that does not parse or validate.
        """
        if not isinstance(query, str) or not query.strip():
            raise RequestError([_error("no operation provided", "GRAPHQL_VALIDATION_FAILED")])
        if variables is None:
            variables = {}
        if not isinstance(variables, dict):
            raise RequestError([_error("variables must be a JSON object")], status=400)
        if operation_name is not None and not isinstance(operation_name, str):
            raise RequestError([_error("operationName must be a string")], status=400)
        prepared = self.document(query)
        if prepared.errors:
            raise RequestError(prepared.errors, prepared.status)
        return prepared, self._operation(prepared, operation_name), variables

    def _run(
        self, query: Any, variables: Any, operation_name: Any, amend: Amend | None = None
    ) -> tuple[Any, list[dict[str, Any]]]:
        prepared, operation, variables = self._request(query, variables, operation_name)
        coerced = self._variables(operation, variables)
        if operation.operation != OperationType.QUERY:
            raise RequestError(
                [
                    _error(
                        f"{operation.operation.value} operations are not served over HTTP by"
                        " the gnosync devnet; it serves queries only",
                        "GRAPHQL_VALIDATION_FAILED",
                        [operation],
                    )
                ]
            )
        compiler = _Compiler(self.schema, prepared.fragments, coerced)
        query_type = self.schema.query_type
        assert query_type is not None
        fields = compiler.collect(query_type, operation.selection_set)
        if any(nodes[0].name.value in ("__schema", "__type") for nodes in fields.values()):
            return self._introspect(prepared, operation, fields, variables)
        data: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for key, nodes in fields.items():
            node = nodes[0]
            name = node.name.value
            if name == "__typename":
                data[key] = query_type.name
            elif name == "latestBlockHeight":
                data[key] = self.chain.tip if amend is None else amend(name, self.chain.tip)
            elif name in ("getBlocks", "getTransactions"):
                field = query_type.fields[name]
                args = self._arguments(field, node, coerced)
                list_type = field.type  # [Block!] / [Transaction!]: nullable lists
                assert isinstance(list_type, GraphQLList)
                projector = compiler.value_projector(
                    list_type.of_type,
                    [n.selection_set for n in nodes if n.selection_set is not None],
                )
                assert projector is not None
                items = self._blocks(args) if name == "getBlocks" else self._transactions(args)
                try:
                    data[key] = self._capped(items, projector, key, errors)
                except ResolverError as exc:
                    data[key] = None
                    errors.append({"message": str(exc), "path": [key]})
                else:
                    if amend is not None:
                        data[key] = amend(name, data[key])
            else:  # validated against the schema: nothing else exists
                raise RequestError([_error(f"field {name} is not served", None, [node])])
        return data, errors

    def _operation(self, prepared: _Document, name: str | None) -> OperationDefinitionNode:
        operations = prepared.operations
        if name:
            for operation in operations:
                if operation.name is not None and operation.name.value == name:
                    return operation
            raise RequestError([_error(f"operation {name} not found", "GRAPHQL_VALIDATION_FAILED")])
        if len(operations) == 1:
            return operations[0]
        raise RequestError(
            [
                _error(
                    "operation name is required when the document has several operations",
                    "GRAPHQL_VALIDATION_FAILED",
                )
            ]
        )

    def _variables(
        self, operation: OperationDefinitionNode, inputs: dict[str, Any]
    ) -> dict[str, Any]:
        coerced: dict[str, Any] = {}
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            type_ = type_from_ast(self.schema, definition.type)
            try:
                if name in inputs:
                    coerced[name] = coerce_input(inputs[name], type_, f"variable.{name}")
                elif definition.default_value is not None:
                    coerced[name] = literal_value(definition.default_value, type_, {})
                elif isinstance(type_, GraphQLNonNull):
                    raise ValueError(f"variable.{name} must be defined")
            except ValueError as exc:
                raise RequestError(
                    [_error(f"input: {exc}", "GRAPHQL_VALIDATION_FAILED", [definition])]
                ) from None
        return coerced

    @staticmethod
    def _arguments(field: Any, node: FieldNode, variables: dict[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for argument in node.arguments:
            name = argument.name.value
            value = literal_value(argument.value, field.args[name].type, variables)
            if value is not MISSING:
                args[name] = value
        return args

    def _introspect(
        self,
        prepared: _Document,
        operation: OperationDefinitionNode,
        fields: dict[str, list[FieldNode]],
        variables: dict[str, Any],
    ) -> tuple[Any, list[dict[str, Any]]]:
        names = {nodes[0].name.value for nodes in fields.values()}
        if not names <= {"__schema", "__type", "__typename"}:
            raise RequestError(
                [
                    _error(
                        "the gnosync devnet answers introspection only in operations"
                        " without data fields",
                        "GRAPHQL_VALIDATION_FAILED",
                    )
                ]
            )
        assert prepared.document is not None
        result = execute_sync(
            self.schema,
            prepared.document,
            variable_values=variables,
            operation_name=operation.name.value if operation.name else None,
        )
        errors = [{"message": error.message} for error in result.errors or ()]
        return result.data, errors

    # ---------------------------------------------------------------- resolvers

    def _capped(
        self, items: Iterator[Any], projector: Projector, key: str, errors: list[dict[str, Any]]
    ) -> list[Any]:
        """At most ``max_elements`` projected items; at the cap, tx-indexer's error.

        tx-indexer checks the cap before it looks for another element, so a result of
        exactly ``max_elements`` carries the error too.
        """
        cap = self.max_elements
        out: list[Any] = []
        append = out.append
        for item in items:
            append(projector(item))
            if len(out) == cap:
                errors.append({"message": f"max elements per query reached ({cap})", "path": [key]})
                break
        return out

    def _blocks(self, args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        where = args.get("where") or {}
        order = args.get("order") or {}
        descending = order.get("height") == "DESC"
        low, high = range_bounds(where, "height")
        chain = self.chain
        low, high = max(low, chain.lowest), min(high, chain.tip)
        if low > high:
            return iter(())
        blocks = chain.iter_blocks(low, high, descending=descending)
        if only_ranges(where, frozenset({"height"})):
            return blocks
        match = compile_filter(self.schema, "FilterBlock", where)
        return (block for block in blocks if match(block))

    def _transactions(self, args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        where = args.get("where") or {}
        order = args.get("order") or {}
        descending = order.get("heightAndIndex") == "DESC"
        chain = self.chain
        hash_filter = where.get("hash") or {}
        if hash_filter.get("eq") is not None and not where.get("_or"):
            # tx-indexer looks a hash up directly and reports a miss as an error.
            tx = chain.transaction_by_hash(hash_filter["eq"])
            if tx is None:
                return _raise(ResolverError("item not found in storage"))
            match = compile_filter(self.schema, "FilterTransaction", where)
            return iter([tx] if match(tx) else [])
        low, high = range_bounds(where, "block_height")
        low, high = max(low, chain.lowest), min(high, chain.tip)
        if low > high:
            return iter(())
        first, last = range_bounds(where, "index")
        txs = chain.iter_transactions(low, high, descending=descending)
        if first > 0 or last < U64_MAX:
            txs = (tx for tx in txs if first <= tx["index"] <= last)
        if only_ranges(where, frozenset({"block_height", "index"})):
            return txs
        match = compile_filter(self.schema, "FilterTransaction", where)
        return (tx for tx in txs if match(tx))


def _raise(exc: Exception) -> Iterator[Any]:
    raise exc
    yield  # pragma: no cover  (makes this a generator)
