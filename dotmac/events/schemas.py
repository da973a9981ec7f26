"""Typed payloads: one schema per topic, a pydantic v2 model or a stdlib dataclass.

A schema is registered on a bus (``bus.register_schema("orders", Order)``) or taken from a
handler's first parameter (``async def h(order: Order)``). It is used three ways:

- ``publish`` refuses a payload that does not match with :class:`ValidationError` naming the
  field, dumps a model instance to JSON (``model_dump(mode="json")`` / ``dataclasses.asdict``) and
  sets ``EventMetadata.schema_version`` (the model's ``__schema_version__``, else its name);
- a consumed payload that does not match is dead-lettered as a ``DecodeError`` whose message
  names the field (caused by the ValidationError); the handler never sees it;
- a typed handler receives the validated object, and the Event too if it takes a second argument.

This module never imports pydantic: a pydantic model is recognised by its methods
(``model_validate``, ``model_dump``), so ``import dotmac.events`` stays free of the extra.
Dataclass payloads are checked against their annotations (builtin types, ``X | None``,
``list[X]``, ``dict[str, X]``, nested dataclasses); other annotations are not checked.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from dotmac.events.codec import Codec
from dotmac.events.errors import ConfigurationError, DecodeError, ValidationError
from dotmac.events.event import Event, EventMetadata

__all__ = ["SchemaCodec", "TopicSchema", "is_schema_model", "typed_handler"]

_MISSING = object()


def _is_pydantic(model: object) -> bool:
    return isinstance(model, type) and callable(getattr(model, "model_validate", None))


def is_schema_model(model: object) -> bool:
    """True for a pydantic v2 model class or a dataclass class."""
    if model is Event:
        return False
    return _is_pydantic(model) or (isinstance(model, type) and dataclasses.is_dataclass(model))


class TopicSchema:
    """A model class with the three operations the bus needs: load, dump and check."""

    __slots__ = ("_hints", "_pydantic", "model", "name", "version")

    def __init__(self, model: type[Any]) -> None:
        if not is_schema_model(model):
            raise ConfigurationError(
                "schema", f"must be a pydantic model or a dataclass class, got {model!r}"
            )
        self.model = model
        self.name = model.__name__
        version = getattr(model, "__schema_version__", None)
        self.version = str(version) if version is not None else self.name
        self._pydantic = _is_pydantic(model)
        self._hints: dict[str, Any] | None = None if self._pydantic else _hints(model)

    def load(self, payload: Any) -> Any:
        """The payload as a model instance.

        Raises:
            ValidationError: the payload does not match; the error names the first bad field.
        """
        if self._pydantic:
            try:
                return self.model.model_validate(payload)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                errors = getattr(exc, "errors", None)
                first = errors()[0] if callable(errors) and errors() else None
                if first is None:
                    raise ValidationError("payload", str(exc), self.name) from exc
                field = ".".join(str(part) for part in first.get("loc", ())) or "payload"
                raise ValidationError(field, str(first.get("msg", exc)), self.name) from exc
        return _load_dataclass(self.model, self._hints, payload, "", self.name)

    def dump(self, obj: Any) -> Any:
        """A model instance as JSON-ready data."""
        if self._pydantic:
            return obj.model_dump(mode="json")
        return dataclasses.asdict(obj)

    def for_publish(self, event: Event) -> Event:
        """The event to send: its payload checked (or a model instance dumped) and
        ``metadata.schema_version`` set.

        Raises:
            ValidationError: the payload does not match the schema.
        """
        payload = event.payload
        if isinstance(payload, self.model):
            payload = self.dump(payload)
            if not self._pydantic:  # a dataclass instance is not checked when built
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
