"""The bounds templates render under: sizes measured before anything is built, a budget of steps and time.

i2vd/config/templates.py hooks these into Jinja; see its docstring for what each bound covers.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
import types
from collections import abc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2.sandbox
from jinja2.utils import Namespace

MAX_SIZE = 64 * 1024  # characters of any string, logical size of any sequence an operation builds
MAX_TEMPLATE = 16 * 1024  # characters of a template's source: compiling 64 KB of it takes seconds and tens of MB
MAX_NESTING = 64  # levels of lists in lists a template may build
MAX_DEPTH = 64  # calls (macros, loop(), methods) nested inside each other
MAX_STEPS = 1_000_000  # operations, loop iterations and block bodies in one render
RENDER_SECONDS = 2.0  # compile and render, wall clock
MAX_INT_BITS = 64 * 1024
_SCALARS = (bool, float, complex, type(None))
_SEQUENCES = (list, tuple, set, frozenset, abc.KeysView, abc.ValuesView, abc.ItemsView)


class TemplateLimitError(jinja2.sandbox.SecurityError):
    """A template went beyond a bound on its work or output."""


@dataclass
class Budget:
    """What one render (in one thread: a ContextVar) has left."""

    deadline: float
    seconds: float
    max_steps: int
    steps: int = 0
    depth: int = 0  # calls nested now


_BUDGET: ContextVar[Budget | None] = ContextVar("i2vd_template_budget", default=None)


@contextmanager
def budget(seconds: float = RENDER_SECONDS, steps: int = MAX_STEPS) -> Iterator[Budget]:
    given = Budget(time.monotonic() + seconds, seconds, steps)
    token = _BUDGET.set(given)
    try:
        yield given
    finally:
        _BUDGET.reset(token)


def current_budget() -> Budget | None:
    return _BUDGET.get()


def tick() -> None:
    """One unit of template work: fail once the render has used its steps or its time."""
    left = _BUDGET.get()
    if left is None:
        return
    left.steps += 1
    if left.steps > left.max_steps:
        raise TemplateLimitError(f"too much template work: more than {left.max_steps:,} steps (loops or recursion?)")
    if time.monotonic() > left.deadline:
        raise TemplateLimitError(f"too much template work: rendering took longer than {left.seconds:g} s (loops?)")


def too_big(what: str, size: int | float) -> TemplateLimitError:
    return TemplateLimitError(f"{what} would be {size:,.0f} characters; a template may build at most {MAX_SIZE:,}")


def measure(value: Any, what: str = "a value") -> int:
    """The size `value` has as text, roughly, counted without building it; raise once past MAX_SIZE.

    Shared references count each time (`[x, x]` is twice x): that is what str(), join or
    json would write. Walks at most about MAX_SIZE items, iteratively.
    """
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (str, bytes, bytearray)):
            total += len(item)
        elif isinstance(item, _SCALARS):
            total += 8
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, (abc.Mapping, Namespace, *_SEQUENCES)):
            if level >= MAX_NESTING:
                raise TemplateLimitError(f"{what} nests deeper than {MAX_NESTING} levels")
            if isinstance(item, Namespace):
                item = object.__getattribute__(item, "_Namespace__attrs")
            total += 2 + 2 * len(item)
            if total > MAX_SIZE:
                raise too_big(what, total)
            children = itertools.chain(item.keys(), item.values()) if isinstance(item, abc.Mapping) else item
            stack.extend((child, level + 1) for child in children)
        else:
            total += 16  # a macro, a loop, a generator: str() of them is short
        if total > MAX_SIZE:
            raise too_big(what, total)
    return total


def checked(value: Any, what: str) -> Any:
    """Measure a result; an iterator (map, select, batch, ...) is measured item by item as it is consumed."""
    if isinstance(value, abc.Iterator) and not isinstance(value, (str, bytes)):
        return bounded_items(value, what)
    measure(value, what)
    return value


def bounded_items(iterator: abc.Iterator, what: str) -> abc.Iterator:
    """Whoever reads it (a list, a join, a sort) can never pull more than MAX_SIZE of items out of it."""
    total = 0
    for item in iterator:
        tick()
        total += measure(item, what) + 2
        if total > MAX_SIZE:
            raise too_big(what, total)
        yield item


def at_most(value: Any, name: str) -> int:
    if isinstance(value, int) and value > MAX_SIZE:
        raise too_big(f"{name} {value:,}", value)
    return value if isinstance(value, int) else 0


def bounded_list(iterable: Any, what: str, separator: int = 0) -> list[Any]:
    """The items of `iterable`, read one at a time and measured (with a separator's length between them)."""
    items = []
    total = 0
    for item in iterable:
        tick()
        total += measure(item, what) + (separator if items else 0)
        if total > MAX_SIZE:
            raise too_big(what, total)
        items.append(item)
    return items


def check_replace(text: str, old: str, new: str, count: int | None, what: str) -> None:
    times = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        times = min(times, count)
    size = len(text) + times * (len(new) - len(old))
    if size > MAX_SIZE:
        raise too_big(what, size)


def digits_in(spec: str, what: str) -> int:
    """Every number in a format spec (fill, width, precision), added up: an upper bound on what they pad."""
    total = 0
    for run in re.findall(r"\d+", spec):
        if len(run) > 6:
            raise too_big(what, float(f"1e{len(run)}"))
        total += int(run)
    return total


_PRINTF = re.compile(r"%(?:\((?P<key>[^)]*)\))?(?P<spec>[#0\- +]*(?:\*|\d+)?(?:\.(?:\*|\d*))?)[hlL]?(?P<type>.?)", re.S)


def check_printf(template: str, arguments: Any, what: str = "a %-format") -> None:
    """`'%999999999s' % 1`, `'%(a)s%(a)s' % {'a': big}`: size a printf-style format before running it."""
    total = len(template)
    positional = arguments if isinstance(arguments, tuple) else (arguments,)
    index = 0
    for match in _PRINTF.finditer(template):
        if match["type"] == "%":
            continue
        if "*" in match["spec"]:
            raise TemplateLimitError(f"{what}: a '*' width is not allowed in a template")
        total += digits_in(match["spec"], what)
        if match["key"] is not None:
            value = arguments.get(match["key"], "") if isinstance(arguments, abc.Mapping) else ""
        else:
            value = positional[index] if index < len(positional) else ""
            index += 1
        total += measure(value, what)
        if total > MAX_SIZE:
            raise too_big(what, total)


class BoundedFormatter(jinja2.sandbox.SandboxedFormatter):
    """str.format with every field's width and value added up before it is written."""

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        tick()
        self._size += digits_in(format_spec, "a str.format") + measure(value, "a str.format")
        if self._size > MAX_SIZE:
            raise too_big("a str.format", self._size)
        return super().format_field(value, format_spec)


# Methods of built-in values a template may call; anything else (translate, encode, to_bytes, ...) is refused.
_STR_METHODS = frozenset(
    [
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "isidentifier",
        "islower",
        "isnumeric",
        "isprintable",
        "isspace",
        "istitle",
        "isupper",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rindex",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        "center",
        "ljust",
        "rjust",
        "zfill",
        "expandtabs",
        "join",
        "replace",
    ]
)
_OTHER_METHODS = frozenset(
    ["get", "items", "keys", "values", "copy", "count", "index", "bit_length", "is_integer", "conjugate"]
)


def check_method(method: Any, args: tuple, kwargs: dict) -> Callable[[], Any] | None:
    """Refuse or size a call of a built-in value's method; a replacement call when the arguments had to be read."""
    owner = getattr(method, "__self__", None)
    builtin_values = (str, bytes, bytearray, int, float, abc.Mapping, list, tuple, set, frozenset)
    if not isinstance(method, (types.BuiltinMethodType, types.MethodType)) or not isinstance(owner, builtin_values):
        return None  # a macro, loop(), a cycler: sized by what they return
    name = method.__name__
    what = f"{type(owner).__name__}.{name}()"
    if not isinstance(owner, str):
        if isinstance(owner, (int, float, abc.Mapping, list, tuple)) and name in _OTHER_METHODS:
            return None
        raise jinja2.sandbox.SecurityError(f"{what} is not allowed in a template")
    if name not in _STR_METHODS:
        raise jinja2.sandbox.SecurityError(f"{what} is not allowed in a template")
    first = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill"):
        at_most(first, f"{what} width")
    elif name == "expandtabs":
        tabs = at_most(8 if first is None else first, f"{what} tab size")
        if len(owner) + owner.count("\t") * tabs > MAX_SIZE:
            raise too_big(what, len(owner) + owner.count("\t") * tabs)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else None, what)
    elif name == "replace":
        raise jinja2.sandbox.SecurityError(f"{what}: give old and new as plain arguments in a template")
    elif name == "join":
        return functools.partial(method, bounded_list(first if first is not None else (), what, len(owner)))
    return None


def bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_SIZE:
        raise TemplateLimitError(f"range of {len(numbers):,} numbers; a template may loop over at most {MAX_SIZE:,}")
    return numbers


class BoundedNamespace(Namespace):
    """`namespace()` whose `{% set ns.x = ... %}` values are measured: the one mutable thing a template has."""

    def __setitem__(self, name: str, value: Any) -> None:
        tick()
        attributes = object.__getattribute__(self, "_Namespace__attrs")
        measure({**attributes, name: value}, f"the namespace after setting {name}")
        super().__setitem__(name, value)


class BoundedBuffer(list):
    """The output a macro, call, filter or set block collects, bounded as it grows."""

    size = 0

    def append(self, item: Any) -> None:
        self.size += len(item) if isinstance(item, str) else measure(item)
        if self.size > MAX_SIZE:
            raise too_big("a block's output", self.size)
        super().append(item)

    def extend(self, items: Any) -> None:
        for item in items:
            self.append(item)


def bounded_concat(parts: Any, what: str = "a block's output") -> str:
    texts = []
    size = 0
    for part in parts:
        text = part if isinstance(part, str) else str(checked(part, what))
        size += len(text)
        if size > MAX_SIZE:
            raise too_big(what, size)
        texts.append(text)
    return "".join(texts)


def check_repeat(left: Any, right: Any) -> None:
    if isinstance(left, (int, float, complex)) and isinstance(right, (int, float, complex)):
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"a * of numbers would have more than {MAX_INT_BITS:,} bits")
        return
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(times, int) and times > 0:
        if times > MAX_SIZE:
            raise too_big("a * repetition", times * max(1, len(sequence) if isinstance(sequence, str) else 1))
        size = measure(sequence, "a * repetition") * times
        if size > MAX_SIZE:
            raise too_big("a * repetition", size)


def check_power(base: Any, exponent: Any) -> None:
    positive = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if positive and base.bit_length() * exponent > MAX_INT_BITS:
        raise TemplateLimitError(f"a ** would have more than {MAX_INT_BITS:,} bits")
