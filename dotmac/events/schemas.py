"""Typed payloads: one schema per topic, a pydantic v2 model, a msgspec Struct or a dataclass.

A schema is registered on a bus (``bus.register_schema("orders", Order)``) or taken from a
handler's first parameter (``async def h(order: Order)``). It is used three ways:

- ``publish`` refuses a payload that does not match with :class:`ValidationError` naming the
  field, dumps a model instance to JSON (``model_dump(mode="json")``, ``msgspec.to_builtins``,
  ``dataclasses.asdict``) and sets ``EventMetadata.schema_version`` (the model's
  ``__schema_version__``, else its name);
- a consumed payload that does not match is dead-lettered as a ``DecodeError`` whose message
  names the field (caused by the ValidationError); the handler never sees it;
- a typed handler receives the validated object, and the Event too if it takes a second argument;
  a model instance it returns to a request is sent as the same JSON dump (:func:`dump_model`).

This module never imports pydantic or msgspec, so ``import dotmac.events`` stays free of both
extras: a pydantic model is recognised by its methods (``model_validate``, ``model_dump``), a
msgspec Struct by subclassing ``msgspec.Struct`` when msgspec is already imported (a Struct class
cannot exist otherwise), and msgspec's ``convert`` / ``to_builtins`` are taken from that loaded
module. Dataclass payloads are checked against their annotations (builtin types, ``X | None``,
``list[X]``, ``dict[str, X]``, nested dataclasses); other annotations are not checked.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from dotmac.events.codec import Codec
from dotmac.events.errors import ConfigurationError, DecodeError, ValidationError
from dotmac.events.event import Event, EventMetadata

__all__ = ["SchemaCodec", "TopicSchema", "dump_model", "is_schema_model", "typed_handler"]

_MISSING = object()
_PYDANTIC, _MSGSPEC, _DATACLASS = "pydantic", "msgspec", "dataclass"


def _msgspec() -> Any:
    """The msgspec module if something already imported it (a Struct class exists), else None."""
    return sys.modules.get("msgspec")


def _model_kind(model: object) -> str | None:
    if not isinstance(model, type) or model is Event:
        return None
    if callable(getattr(model, "model_validate", None)):
        return _PYDANTIC
    if hasattr(model, "__struct_fields__"):
        msgspec = _msgspec()
        if msgspec is not None and issubclass(model, msgspec.Struct):
            return _MSGSPEC
    if dataclasses.is_dataclass(model):
        return _DATACLASS
    return None


def is_schema_model(model: object) -> bool:
    """True for a pydantic v2 model class, a msgspec Struct class or a dataclass class."""
    return _model_kind(model) is not None


def dump_model(value: Any) -> Any:
    """``value`` as JSON-ready data when it is a model instance (as ``publish`` dumps it),
    else ``value`` unchanged: what a handler returns to a request is sent this way."""
    kind = _model_kind(type(value))
    return value if kind is None else _dump(kind, value)


def _dump(kind: str, obj: Any) -> Any:
    if kind == _PYDANTIC:
        return obj.model_dump(mode="json")
    if kind == _MSGSPEC:
        return _msgspec().to_builtins(obj)
    return dataclasses.asdict(obj)


class TopicSchema:
    """A model class with the three operations the bus needs: load, dump and check."""

    __slots__ = ("_hints", "_kind", "model", "name", "version")

    def __init__(self, model: type[Any]) -> None:
        kind = _model_kind(model)
        if kind is None:
            raise ConfigurationError(
                "schema",
                f"must be a pydantic model, a msgspec Struct or a dataclass class, got {model!r}",
            )
        self.model = model
        self.name = model.__name__
        version = getattr(model, "__schema_version__", None)
        self.version = str(version) if version is not None else self.name
        self._kind = kind
        self._hints: dict[str, Any] | None = _hints(model) if kind == _DATACLASS else None

    def load(self, payload: Any) -> Any:
        """The payload as a model instance.

        Raises:
            ValidationError: the payload does not match; the error names the first bad field.
        """
        if self._kind == _PYDANTIC:
            try:
                return self.model.model_validate(payload)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                errors = getattr(exc, "errors", None)
                first = errors()[0] if callable(errors) and errors() else None
                if first is None:
                    raise ValidationError("payload", str(exc), self.name) from exc
                field = ".".join(str(part) for part in first.get("loc", ())) or "payload"
                raise ValidationError(field, str(first.get("msg", exc)), self.name) from exc
        if self._kind == _MSGSPEC:
            msgspec = _msgspec()
            try:
                return msgspec.convert(payload, self.model)
            except msgspec.ValidationError as exc:
                field, reason = _msgspec_field(str(exc))
                raise ValidationError(field, reason, self.name) from exc
        return _load_dataclass(self.model, self._hints, payload, "", self.name)

    def dump(self, obj: Any) -> Any:
        """A model instance as JSON-ready data."""
        return _dump(self._kind, obj)

    def for_publish(self, event: Event) -> Event:
        """The event to send: its payload checked (or a model instance dumped) and
        ``metadata.schema_version`` set.

        Raises:
            ValidationError: the payload does not match the schema.
        """
        payload = event.payload
        if isinstance(payload, self.model):
            payload = self.dump(payload)
            if self._kind != _PYDANTIC:  # dataclasses and Structs are not checked when built
                self.load(payload)
        else:
            self.load(payload)
        meta = event.metadata
        if meta is None:
            meta = EventMetadata(schema_version=self.version)
        elif meta.schema_version is None:
            meta = dataclasses.replace(meta, schema_version=self.version)
        return Event(
            event.topic,
            payload,
            event.key,
            event.headers,
            event.tenant_id,
            meta,
            id=event.id,
            timestamp=event.timestamp,
        )


class SchemaCodec:
    """Wraps a subscription's codec: decoded payloads that do not match are a DecodeError,
    so the engine dead-letters them before any handler runs."""

    def __init__(self, codec: Codec, schema: TopicSchema) -> None:
        self._codec = codec
        self._schema = schema
        self.content_type = codec.content_type

    def encode(self, event: Event) -> bytes:
        return self._codec.encode(event)

    def decode(self, data: bytes) -> Event:
        event = self._codec.decode(data)
        try:
            self._schema.load(event.payload)
        except ValidationError as exc:
            raise DecodeError(f"topic {event.topic!r}: {exc}") from exc
        return event


def typed_handler(handler: Callable[..., Any]) -> tuple[Callable[[Event], Any], TopicSchema] | None:
    """When ``handler``'s first parameter is annotated with a model, a handler taking the Event
    that calls it with the loaded model (and the Event when it takes a second argument), and
    the schema; otherwise None."""
    target = handler
    if not inspect.isfunction(target) and not inspect.ismethod(target):
        target = getattr(handler, "__call__", handler)  # noqa: B004 - the method
    try:
        params = [
            p
            for p in inspect.signature(target).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return None
    if not params:
        return None
    model: Any
    try:
        model = typing.get_type_hints(target).get(params[0].name)
    except (NameError, TypeError):  # another annotation does not resolve: take this one as is
        model = params[0].annotation
        if isinstance(model, str):  # postponed: look the bare name up where it was written
            model = getattr(inspect.unwrap(target), "__globals__", {}).get(model)
    if not is_schema_model(model):
        return None
    schema = TopicSchema(model)
    load = schema.load
    with_event = len(params) >= 2
    call: Callable[[Event], Any]
    if inspect.iscoroutinefunction(target):
        if with_event:

            async def call(event: Event) -> Any:
                return await handler(load(event.payload), event)
        else:

            async def call(event: Event) -> Any:
                return await handler(load(event.payload))
    elif with_event:

        def call(event: Event) -> Any:
            return handler(load(event.payload), event)
    else:

        def call(event: Event) -> Any:
            return handler(load(event.payload))

    return call, schema


# --- msgspec's errors ------------------------------------------------------------------------

# "Expected `int`, got `str` - at `$.items[0].qty`"; the "- at" part is absent at the top level.
_MSGSPEC_AT = re.compile(r"(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.S)
_MSGSPEC_NAMED = re.compile(r"(?:missing required|contains unknown) field `(?P<name>[^`]*)`")


def _msgspec_field(message: str) -> tuple[str, str]:
    """``(field, reason)`` from a msgspec.ValidationError message, the field spelt as for
    dataclasses (``items[0].qty``); a missing or unknown field's own name completes the path."""
    match = _MSGSPEC_AT.fullmatch(message)
    reason, path = (match["reason"], match["path"] or "") if match else (message, "")
    path = path.removeprefix(".")
    named = _MSGSPEC_NAMED.search(reason)
    if named is not None:
        path = f"{path}.{named['name']}" if path else named["name"]
    return path or "payload", reason


# --- dataclasses, checked against their annotations ----------------------------------------


def _hints(model: type[Any]) -> dict[str, Any] | None:
    try:
        return typing.get_type_hints(model)
    except (NameError, TypeError):
        return None  # annotations that cannot be resolved are not checked


def _load_dataclass(
    model: type[Any], hints: dict[str, Any] | None, payload: Any, path: str, name: str
) -> Any:
    if not isinstance(payload, dict):
        raise ValidationError(path or "payload", f"must be an object, got {_kind(payload)}", name)
    fields = {f.name: f for f in dataclasses.fields(model) if f.init}
    for key in payload:
        if key not in fields:
            raise ValidationError(f"{path}{key}", "is not a field of the schema", name)
    values: dict[str, Any] = {}
    for field_name, spec in fields.items():
        where = f"{path}{field_name}"
        value = payload.get(field_name, _MISSING)
        if value is _MISSING:
            no_default = spec.default is dataclasses.MISSING
            if no_default and spec.default_factory is dataclasses.MISSING:
                raise ValidationError(where, "is required", name)
            continue
        hint = Any if hints is None else hints.get(field_name, Any)
        values[field_name] = _convert(value, hint, where, name)
    return model(**values)


def _convert(value: Any, hint: Any, path: str, name: str) -> Any:
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        for option in typing.get_args(hint):
            try:
                return _convert(value, option, path, name)
            except ValidationError:
                continue
        raise ValidationError(path, f"{_kind(value)} does not match {hint}", name)
    if hint is None or hint is type(None):
        if value is None:
            return None
        raise ValidationError(path, f"must be null, got {_kind(value)}", name)
    if origin is list:
        if not isinstance(value, list):
            raise ValidationError(path, f"must be a list, got {_kind(value)}", name)
        (item,) = typing.get_args(hint) or (Any,)
        return [_convert(v, item, f"{path}[{i}]", name) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValidationError(path, f"must be an object, got {_kind(value)}", name)
        _key, item = typing.get_args(hint) or (str, Any)
        return {k: _convert(v, item, f"{path}.{k}", name) for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _load_dataclass(hint, _hints(hint), value, f"{path}.", name)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and origin is None:
        if isinstance(value, bool) and hint is not bool and hint is not object:
            raise ValidationError(path, f"must be {hint.__name__}, got bool", name)
        if not isinstance(value, hint):
            raise ValidationError(path, f"must be {hint.__name__}, got {_kind(value)}", name)
    return value  # other annotations (Literal, datetime, ...) are not checked


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
