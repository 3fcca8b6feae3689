"""Frozen dataclasses of the domain to JSON-able data and back, driven by their type hints.

Gate profiles are stored once per distinct profile (``gate_profiles``) and rebuilt when the
bulk gate needs them; frozensets are written sorted so equal profiles have equal keys.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import fields, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from gatekeeper.timeparse import isoformat, parse_instant

T = TypeVar("T")


def to_data(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in fields(value) if f.init}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, frozenset | set):
        return sorted((to_data(v) for v in value), key=_sort_key)
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in sorted(value.items())}
    return value


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def key_of(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def from_data(cls: type[T], data: Any) -> T:
    return typing.cast(T, _build(cls, data))


def _build(tp: Any, data: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        return _build(next(a for a in args if a is not type(None)), data)
    if origin in (frozenset, set):
        return frozenset(_build(args[0], v) for v in data)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in data)
        return tuple(_build(a, v) for a, v in zip(args, data, strict=True))
    if origin is dict:
        return {k: _build(args[1], v) for k, v in data.items()}
    if isinstance(tp, type) and is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(
            **{f.name: _build(hints[f.name], data[f.name]) for f in fields(tp) if f.init and f.name in data}
        )
    if tp is datetime:
        return None if data is None else parse_instant(data)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(data)
    return data
