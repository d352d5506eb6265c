"""Jinja2 rendering with bounded work and output, for templates that anyone who can write to the share wrote.

SPEC "Reliability": no operation may build a string or sequence beyond 64 KB, a
rendered prompt is at most 4 KB, an output name at most 255 bytes, and rendering
has a time limit. A breach raises TemplateLimitError; nothing large is ever built.

How each kind of work is bounded (an immutable sandbox blocks `list.append` & co.):
- operators `*`, `+`, `%`, `**` are intercepted and sized *before* they run;
- every call (methods, macros, `loop()`, globals) goes through `call`: methods of
  built-in values are allowlisted, the growing ones (`center`, `ljust`, `join`,
  `replace`, `format`, ...) sized first; calls nest at most MAX_DEPTH deep;
- every filter is wrapped: the growing ones sized first, every result measured;
- `~`, list/tuple/dict literals, `{% set ns.x %}`, macro/block buffers and the
  rendered output are measured as they are built;
- `range` is bounded, `lipsum`, `pprint`, `urlize` and `xmlattr` are gone.

The time limit is a deadline (and a step budget) checked at each of those hooks and
at the start of every block body, which the code generator makes call `tick()`:
so every loop iteration, macro call and operation looks at the clock, and between
two looks the work is bounded by one operation on values of at most 64 KB. Why not
the alternatives: a signal (SIGALRM) only reaches the main thread, and templates
render in the intake's thread; `sys.settrace` would replace a debugger's or
coverage's tracer and slow every line; a subprocess per render is not in-process.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
import types
from collections import abc
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable

import jinja2
import jinja2.sandbox
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.utils import Namespace, _PassArg

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
class _Budget:
    deadline: float
    seconds: float
    steps: int = 0
    depth: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("i2vd_template_budget", default=None)


def tick() -> None:
    """One unit of template work: fail once the render has used its steps or its time."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps > MAX_STEPS:
        raise TemplateLimitError(f"too much template work: more than {MAX_STEPS:,} steps (loops or recursion?)")
    if time.monotonic() > budget.deadline:
        raise TemplateLimitError(f"too much template work: rendering took longer than {budget.seconds:g} s (loops or recursion?)")


def _too_big(what: str, size: int | float) -> TemplateLimitError:
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
                raise _too_big(what, total)
            children = itertools.chain(item.keys(), item.values()) if isinstance(item, abc.Mapping) else item
            stack.extend((child, level + 1) for child in children)
        else:
            total += 16  # a macro, a loop, a generator: str() of them is short
        if total > MAX_SIZE:
            raise _too_big(what, total)
    return total


def _checked(value: Any, what: str) -> Any:
    """Measure a result; an iterator (map, select, batch, ...) is measured item by item as it is consumed."""
    if isinstance(value, abc.Iterator) and not isinstance(value, (str, bytes)):
        return _bounded_items(value, what)
    measure(value, what)
    return value


def _bounded_items(iterator: abc.Iterator, what: str) -> abc.Iterator:
    """Whoever reads it (a list, a join, a sort) can never pull more than MAX_SIZE of items out of it."""
    total = 0
    for item in iterator:
        tick()
        total += measure(item, what) + 2
        if total > MAX_SIZE:
            raise _too_big(what, total)
        yield item


def _number(value: Any, name: str) -> int:
    if isinstance(value, int) and value > MAX_SIZE:
        raise _too_big(f"{name} {value:,}", value)
    return value if isinstance(value, int) else 0


def _bounded_list(iterable: Any, what: str, separator: int = 0) -> list[Any]:
    """The items of `iterable`, read one at a time and measured (with a separator's length between them)."""
    items = []
    total = 0
    for item in iterable:
        tick()
        total += measure(item, what) + (separator if items else 0)
        if total > MAX_SIZE:
            raise _too_big(what, total)
        items.append(item)
    return items


def _check_replace(text: str, old: str, new: str, count: int | None, what: str) -> None:
    times = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        times = min(times, count)
    size = len(text) + times * (len(new) - len(old))
    if size > MAX_SIZE:
        raise _too_big(what, size)


def _digits_in(spec: str, what: str) -> int:
    """Every number in a format spec (fill, width, precision), added up: an upper bound on what they pad."""
    total = 0
    for run in re.findall(r"\d+", spec):
        if len(run) > 6:
            raise _too_big(what, float(f"1e{len(run)}"))
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
        total += _digits_in(match["spec"], what)
        if match["key"] is not None:
            value = arguments.get(match["key"], "") if isinstance(arguments, abc.Mapping) else ""
        else:
            value = positional[index] if index < len(positional) else ""
            index += 1
        total += measure(value, what)
        if total > MAX_SIZE:
            raise _too_big(what, total)


class _Formatter(jinja2.sandbox.SandboxedFormatter):
    """str.format with every field's width and value added up before it is written."""

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        tick()
        self._size += _digits_in(format_spec, "a str.format") + measure(value, "a str.format")
        if self._size > MAX_SIZE:
            raise _too_big("a str.format", self._size)
        return super().format_field(value, format_spec)


# Methods of built-in values a template may call; anything else (translate, encode, to_bytes, ...) is refused.
_STR_METHODS = frozenset(
    "capitalize casefold count endswith find index isalnum isalpha isascii isdecimal isdigit isidentifier islower "
    "isnumeric isprintable isspace istitle isupper lower lstrip partition removeprefix removesuffix rfind rindex "
    "rpartition rsplit rstrip split splitlines startswith strip swapcase title upper "
    "center ljust rjust zfill expandtabs join replace".split()
)
_OTHER_METHODS = frozenset("get items keys values copy count index bit_length is_integer conjugate".split())


def _check_method(method: Any, args: tuple, kwargs: dict) -> Callable[[], Any] | None:
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
        _number(first, f"{what} width")
    elif name == "expandtabs":
        tabs = _number(8 if first is None else first, f"{what} tab size")
        if len(owner) + owner.count("\t") * tabs > MAX_SIZE:
            raise _too_big(what, len(owner) + owner.count("\t") * tabs)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else None, what)
    elif name == "replace":
        raise jinja2.sandbox.SecurityError(f"{what}: give old and new as plain arguments in a template")
    elif name == "join":
        return functools.partial(method, _bounded_list(first if first is not None else (), what, len(owner)))
    return None


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_SIZE:
        raise TemplateLimitError(f"range of {len(numbers):,} numbers; a template may loop over at most {MAX_SIZE:,}")
    return numbers


class _Namespace(Namespace):
    """`namespace()` whose `{% set ns.x = ... %}` values are measured: the one mutable thing a template has."""

    def __setitem__(self, name: str, value: Any) -> None:
        tick()
        measure({**object.__getattribute__(self, "_Namespace__attrs"), name: value}, f"the namespace after setting {name}")
        super().__setitem__(name, value)


class _Buffer(list):
    """The output a macro, call, filter or set block collects, bounded as it grows."""

    size = 0

    def append(self, item: Any) -> None:
        self.size += len(item) if isinstance(item, str) else measure(item)
        if self.size > MAX_SIZE:
            raise _too_big("a block's output", self.size)
        super().append(item)

    def extend(self, items: Any) -> None:
        for item in items:
            self.append(item)


def _concat(parts: Any, what: str = "a block's output") -> str:
    texts = []
    size = 0
    for part in parts:
        text = part if isinstance(part, str) else str(_checked(part, what))
        size += len(text)
        if size > MAX_SIZE:
            raise _too_big(what, size)
        texts.append(text)
    return "".join(texts)


class _Generator(CodeGenerator):
    """Jinja's code generator with hooks: a tick per block body, bounded buffers, `~` and literals measured."""

    def blockvisit(self, nodes: Any, frame: Any) -> None:
        self.writeline("environment.tick()")
        super().blockvisit(nodes, frame)

    def buffer(self, frame: Any) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    @optimizeconst
    def visit_Concat(self, node: Any, frame: Any) -> None:
        self.write("environment.bounded_concat((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("), 'a ~ concatenation')")

    def _literal(self, visit: Callable[[Any, Any], None], node: Any, frame: Any) -> None:
        self.write("environment.bounded_literal(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: Any, frame: Any) -> None:
        self._literal(super().visit_List, node, frame)

    def visit_Dict(self, node: Any, frame: Any) -> None:
        self._literal(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: Any, frame: Any) -> None:
        if node.ctx == "load":
            self._literal(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)


def _filter_center(args: list, kwargs: dict) -> None:
    _number(args[1] if len(args) > 1 else kwargs.get("width", 80), "the center filter's width")


def _filter_indent(args: list, kwargs: dict) -> None:
    text = str(_checked(args[0], "the indent filter's text"))
    width = args[1] if len(args) > 1 else kwargs.get("width", 4)
    size = len(text) + (text.count("\n") + 1) * (len(width) if isinstance(width, str) else _number(width, "the indent filter's width"))
    if size > MAX_SIZE:
        raise _too_big("the indent filter's result", size)


def _filter_join(args: list, kwargs: dict) -> None:
    separator = len(str(args[1] if len(args) > 1 else kwargs.get("d", "")))
    args[0] = _bounded_list(args[0], "the join filter's result", separator)


def _filter_replace(args: list, kwargs: dict) -> None:
    text, old, new = (str(_checked(value, "the replace filter's arguments")) for value in (args + [""] * 3)[:3])
    count = args[3] if len(args) > 3 else kwargs.get("count")
    _check_replace(text, old, new, count if isinstance(count, int) else None, "the replace filter's result")


def _filter_wordwrap(args: list, kwargs: dict) -> None:
    text = str(_checked(args[0], "the wordwrap filter's text"))
    width = args[1] if len(args) > 1 else kwargs.get("width", 79)
    wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring") or "\n"
    lines = len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
    if len(text) + lines * len(str(wrap)) > MAX_SIZE:
        raise _too_big("the wordwrap filter's result", len(text) + lines * len(str(wrap)))


def _filter_format(args: list, kwargs: dict) -> None:
    check_printf(str(_checked(args[0], "the format filter")), kwargs or tuple(args[1:]), "the format filter")


def _filter_count(position: int, keyword: str) -> Callable[[list, dict], None]:
    def check(args: list, kwargs: dict) -> None:
        _number(args[position] if len(args) > position else kwargs.get(keyword), f"the {keyword} argument")

    return check


def _filter_sum(args: list, kwargs: dict) -> None:
    start = args[2] if len(args) > 2 else kwargs.get("start", 0)
    args[0] = _bounded_list(itertools.chain([start], args[0]), "the sum filter's result")[1:]


def _filter_tojson(args: list, kwargs: dict) -> None:
    indent = args[1] if len(args) > 1 else kwargs.get("indent")
    if (len(indent) if isinstance(indent, str) else indent or 0) > 8:
        raise TemplateLimitError("the tojson filter's indent may be at most 8")


_FILTER_CHECKS: dict[str, Callable[[list, dict], None]] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "join": _filter_join,
    "replace": _filter_replace,
    "wordwrap": _filter_wordwrap,
    "format": _filter_format,
    "batch": _filter_count(1, "linecount"),
    "slice": _filter_count(1, "slices"),
    "truncate": _filter_count(1, "length"),
    "sum": _filter_sum,
    "tojson": _filter_tojson,
}
_REMOVED_FILTERS = ("pprint", "urlize", "xmlattr")  # HTML helpers and a pretty-printer: nothing a prompt needs


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if _PassArg.from_obj(function) else 0
    check = _FILTER_CHECKS.get(name)

    @functools.wraps(function)  # keeps jinja_pass_arg
    def bounded(*args: Any, **kwargs: Any) -> Any:
        tick()
        if check is not None and len(args) > skip:
            rest = list(args[skip:])
            check(rest, kwargs)
            args = (*args[:skip], *rest)
        return _checked(function(*args, **kwargs), f"the {name} filter's result")

    return bounded


def _ticking(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def ticking(*args: Any, **kwargs: Any) -> Any:
        tick()
        return function(*args, **kwargs)

    return ticking


def _check_repeat(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"a * of numbers would have more than {MAX_INT_BITS:,} bits")
        return
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(times, int) and times > 0:
        if times > MAX_SIZE:
            raise _too_big("a * repetition", times * max(1, len(sequence) if isinstance(sequence, str) else 1))
        size = measure(sequence, "a * repetition") * times
        if size > MAX_SIZE:
            raise _too_big("a * repetition", size)


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if base.bit_length() * exponent > MAX_INT_BITS:
            raise TemplateLimitError(f"a ** would have more than {MAX_INT_BITS:,} bits")


class BoundedEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """An immutable sandbox whose every operation is sized and counted (see the module's docstring)."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "+", "%", "**"})
    tick = staticmethod(tick)
    bounded_buffer = _Buffer
    bounded_concat = staticmethod(_concat)
    concat = staticmethod(_concat)  # joins macro and block buffers

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)
        self.globals.update(range=_bounded_range, namespace=_Namespace)
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items() if name not in _REMOVED_FILTERS}
        self.tests = {name: _ticking(function) for name, function in self.tests.items()}

    @staticmethod
    def bounded_literal(value: Any) -> Any:
        tick()
        measure(value, "a literal")
        return value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        tick()
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "+" and not (isinstance(left, (int, float)) and isinstance(right, (int, float))):
            if measure(left, "a + concatenation") + measure(right, "a + concatenation") > MAX_SIZE:
                raise _too_big("a + concatenation", measure(left) + measure(right))
        elif operator == "%" and isinstance(left, str):
            check_printf(left, right)
        elif operator == "**":
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in ("format", "format_map"):
            return None
        template = value.__self__
        if not isinstance(template, str):
            return None
        formatter = _Formatter(self)
        is_format_map = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return formatter.vformat(str(template), args, kwargs)

        return bounded_format

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja's signature)
        tick()
        replacement = _check_method(__obj, args, kwargs)
        budget = _BUDGET.get()
        if budget is not None:
            budget.depth += 1
            if budget.depth > MAX_DEPTH:
                raise TemplateLimitError(f"calls nest deeper than {MAX_DEPTH} (a recursive macro?)")
        try:
            result = replacement() if replacement is not None else super().call(__context, __obj, *args, **kwargs)
        finally:
            if budget is not None:
                budget.depth -= 1
        return _checked(result, "a call's result")


def _finalize(value: Any) -> Any:
    """Every `{{ value }}` before str(): a container is measured (strings are bounded where they are built)."""
    return value if isinstance(value, str) else _checked(value, "an output value")


_ENVIRONMENT = BoundedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, finalize=_finalize)


@functools.lru_cache(maxsize=32)  # a compiled 16 KB template is ~1 MB of code: few of them
def _compile(source: str) -> jinja2.Template:
    return _ENVIRONMENT.from_string(source)


def render_bounded(source: str, variables: dict[str, Any], limit_bytes: int, seconds: float | None = None) -> str:
    """Render `source` with `variables`, stripped; raise TemplateLimitError on any bound, jinja's errors as they are."""
    if len(source) > MAX_TEMPLATE:
        raise TemplateLimitError(f"the template is {len(source):,} characters; at most {MAX_TEMPLATE:,}")
    seconds = RENDER_SECONDS if seconds is None else seconds
    token = _BUDGET.set(_Budget(time.monotonic() + seconds, seconds))
    try:
        for name, value in variables.items():
            measure(value, f"the variable {name}")
        parts: list[str] = []
        size = 0
        for chunk in _compile(source).generate(variables):
            size += len(chunk)
            if size > MAX_SIZE:
                raise _too_big("the rendered text", size)
            parts.append(chunk)
        text = "".join(parts).strip()
    except RecursionError:
        raise TemplateLimitError("the template nests too deep (recursion)") from None
    finally:
        _BUDGET.reset(token)
    size = len(text.encode("utf-8", "surrogateescape"))
    if size > limit_bytes:
        raise TemplateLimitError(f"renders {size:,} bytes; at most {limit_bytes:,} are allowed")
    return text
