"""Command-line flags from config dataclasses, and the configs back from the parsed flags.

One flag per field, named after it (``eval_batch_size`` -> ``--eval-batch-size``), typed by
its annotation (`typing.get_type_hints`):

* ``bool`` -> ``--x/--no-x``;
* ``Literal[...]`` -> ``choices`` (argparse's one-line error lists them);
* ``int``, ``float``, ``str``, ``Path`` and their ``| None`` forms -> that type;
* ``tuple[dict, ...]`` (e.g. `LabelConfig.restarts`) -> a JSON list of objects (one object
  is a list of one); other ``dict``/``list``/``tuple`` fields -> JSON;
* a nested config dataclass (e.g. a ``performance: PerformanceConfig`` field) -> its fields,
  flattened into flags of their own names (``--no-use-cache``).

Every flag defaults to None, "not given": the config's own default (or a preset's value)
stays. The help of a flag is the first sentence of its field's docstring, read from the
source once per module, and the config's default (``--help`` shows it: "(default: 0.1)").

In-house rather than `simple_parsing`: the flags must keep their names (per-command renames
like ``--cache-batch-size``, nested fields flattened without a prefix), unset flags must
mean "keep the preset's value" rather than the dataclass default, and the CLI's ``--help``
must stay fast and add no dependency.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(\"'])")


@dataclass(frozen=True)
class ConfigFlags:
    """The flags of one config dataclass on a parser: `add` registers them, `values` and
    `build` read them back."""

    cls: type
    """The config dataclass (fields of nested config dataclasses become flags too)."""
    title: str | None = None
    """Title of the argument group the flags go into (None: the class's name)."""
    renames: Mapping[str, str] = field(default_factory=dict)
    """Field name -> flag, where a command names a field otherwise (CacheConfig's
    ``batch_size`` is ``--cache-batch-size`` beside LabelConfig's ``--batch-size``)."""
    dest_prefix: str = ""
    """Prefix of the `argparse.Namespace` attributes, keeping two configs' fields apart."""

    def add(self, parser: argparse.ArgumentParser) -> None:
        """Add one flag per (flattened) field to `parser`, in a group of their own."""
        group = parser.add_argument_group(self.title or self.cls.__name__)
        for path, typ, doc in self._leaves():
            name = path[-1]
            flag = self.renames.get(name, "--" + name.replace("_", "-"))
            group.add_argument(flag, dest=self.dest_prefix + name, default=None,
                               help=_with_default(_help_text(doc), self.cls, path),
                               **_arg_kwargs(typ, name))

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The fields given on the command line, nested configs as dicts of theirs."""
        out: dict[str, Any] = {}
        for path, _, _ in self._leaves():
            value = getattr(args, self.dest_prefix + path[-1], None)
            if value is None:
                continue
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        return out

    def overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        """`values` with nested configs built: keyword arguments for the config (or a preset);
        a nested config gets its defaults for the fields not given."""
        return _build_nested(self.cls, self.values(args))

    def build(self, args: argparse.Namespace) -> Any:
        """The config: its defaults, and the given flags over them. Invalid values raise the
        config's own one-line `ConfigError` (a `ValueError`)."""
        return self.cls(**self.overrides(args))

    def _leaves(self) -> list[tuple[tuple[str, ...], Any, str | None]]:
        leaves = list(_leaves(self.cls, ()))
        names = [p[-1] for p, _, _ in leaves]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise TypeError(f"{self.cls.__name__}: nested config fields {dup} would share a "
                            "flag; rename one")
        return leaves


def _build_nested(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    hints = _hints(cls)
    out = dict(given)
    for name, value in given.items():
        sub = _config_type(hints.get(name))
        if isinstance(value, dict) and sub is not None:
            out[name] = sub(**_build_nested(sub, value))
    return out


def _leaves(cls: type, prefix: tuple[str, ...]
            ) -> Iterator[tuple[tuple[str, ...], Any, str | None]]:
    hints, docs = _hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        sub = _config_type(typ)
        if sub is not None:
            yield from _leaves(sub, (*prefix, f.name))
        else:
            yield (*prefix, f.name), typ, docs.get(f.name)


def _config_type(typ: Any) -> type | None:
    # A nested config: a dataclass type, or one ``| None``.
    args = [a for a in _union_args(typ) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _arg_kwargs(typ: Any, name: str) -> dict[str, Any]:
    args = [a for a in _union_args(typ) if a is not type(None)]
    if args == [bool]:
        return {"action": argparse.BooleanOptionalAction}
    if len(args) == 1 and typing.get_origin(args[0]) is Literal:
        choices = typing.get_args(args[0])
        return {"choices": choices, "type": type(choices[0])}
    for plain in (int, float, str, Path):
        if plain in args:
            return {"type": plain, "metavar": name.upper()}
    if len(args) == 1 and _is_records(args[0]):
        return {"type": json_records, "metavar": "JSON"}
    if len(args) == 1 and typing.get_origin(args[0]) in (dict, list, tuple):
        return {"type": json_value, "metavar": "JSON"}
    raise TypeError(f"no command-line flag for field {name!r} of type {typ!r}")


def _union_args(typ: Any) -> list[Any]:
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return list(typing.get_args(typ))
    return [typ]


def _is_records(typ: Any) -> bool:
    # tuple[dict[...], ...]: a sequence of JSON objects.
    args = typing.get_args(typ)
    return (typing.get_origin(typ) is tuple and len(args) == 2 and args[1] is Ellipsis
            and (args[0] is dict or typing.get_origin(args[0]) is dict))


def json_records(text: str) -> tuple[dict[str, Any], ...]:
    """A JSON list of objects (one object: a list of one), as a tuple of dicts."""
    value = json_value(text)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise argparse.ArgumentTypeError("a JSON list of objects, e.g. '[{\"lr\": 0.1}]'")
    return tuple(value)


def json_value(text: str) -> Any:
    """Any JSON value; bad JSON is argparse's one-line error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg}); e.g. '[{{\"lr\": 0.1}}]'"
                                         ) from None


_MISSING = object()


def _default(cls: type, path: tuple[str, ...]) -> Any:
    """The default of the (nested) field at `path` of `cls` (`_MISSING` if it has none)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    f = fields.get(path[0])
    if f is None:
        return _MISSING
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return _MISSING
    if len(path) == 1:
        return value
    sub = _config_type(_hints(cls).get(path[0]))
    return _default(sub, path[1:]) if sub is not None else _MISSING


def _with_default(text: str | None, cls: type, path: tuple[str, ...]) -> str | None:
    """`text` and the config's default, as ``--help`` shows it ("(default: 0.1)"); a value
    too long for a line points at the field instead, and None is left unsaid (the field's
    docstring says what None means)."""
    value = _default(cls, path)
    if value is _MISSING or value is None:
        return text
    if isinstance(value, bool):
        shown = "on" if value else "off"
    elif isinstance(value, str | int | float | Path):
        shown = str(value)
    else:
        shown = json.dumps(value, default=str)
        if len(shown) > 40:
            shown = f"see {cls.__name__}.{'.'.join(path)}"
    shown = shown.replace("%", "%%")
    return f"{text} (default: {shown})" if text else f"(default: {shown})"


def _help_text(doc: str | None) -> str | None:
    if not doc:
        return None
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    first = _SENTENCE_END.split(paragraph, maxsplit=1)[0]
    return first.replace("%", "%%")


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring under it in the class body (base classes included)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_class_docs(klass.__module__, klass.__qualname__))
    return docs


@functools.cache
def _class_docs(module: str, qualname: str) -> dict[str, str]:
    node = _module_classes(module).get(qualname)
    if node is None:
        return {}
    docs: dict[str, str] = {}
    body = node.body
    for stmt, nxt in zip(body, body[1:], strict=False):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


@functools.cache
def _module_classes(module: str) -> dict[str, ast.ClassDef]:
    mod = sys.modules.get(module)
    try:
        source = inspect.getsource(mod) if mod is not None else ""
    except (OSError, TypeError):
        return {}
    out: dict[str, ast.ClassDef] = {}
    _collect_classes(ast.parse(source), "", out)
    return out


def _collect_classes(node: ast.AST, prefix: str, out: dict[str, ast.ClassDef]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef):
            name = prefix + child.name
            out[name] = child
            _collect_classes(child, name + ".", out)

