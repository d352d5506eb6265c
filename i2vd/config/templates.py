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
two looks the work is bounded by one operation (or one `if`-filtered pass) over
values of at most 64 KB: a breach is noticed within milliseconds. Why not
the alternatives: a signal (SIGALRM) only reaches the main thread, and templates
render in the intake's thread; `sys.settrace` would replace a debugger's or
coverage's tracer and slow every line; a subprocess per render is not in-process.
"""

from __future__ import annotations

import functools
import itertools
import types
from collections.abc import Callable
from typing import Any

import jinja2
import jinja2.sandbox
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.utils import _PassArg

from i2vd.config.template_limits import (
    MAX_DEPTH,
    MAX_SIZE,
    MAX_STEPS,
    MAX_TEMPLATE,
    RENDER_SECONDS,
    BoundedBuffer,
    BoundedFormatter,
    BoundedNamespace,
    TemplateLimitError,
    at_most,
    bounded_concat,
    bounded_list,
    bounded_range,
    budget,
    check_method,
    check_power,
    check_printf,
    check_repeat,
    check_replace,
    checked,
    current_budget,
    measure,
    tick,
    too_big,
)

__all__ = ["MAX_SIZE", "TemplateLimitError", "measure", "render_bounded"]


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
    at_most(args[1] if len(args) > 1 else kwargs.get("width", 80), "the center filter's width")


def _filter_indent(args: list, kwargs: dict) -> None:
    text = str(checked(args[0], "the indent filter's text"))
    width = args[1] if len(args) > 1 else kwargs.get("width", 4)
    indent = len(width) if isinstance(width, str) else at_most(width, "the indent filter's width")
    size = len(text) + (text.count("\n") + 1) * indent
    if size > MAX_SIZE:
        raise too_big("the indent filter's result", size)


def _filter_join(args: list, kwargs: dict) -> None:
    separator = len(str(args[1] if len(args) > 1 else kwargs.get("d", "")))
    args[0] = bounded_list(args[0], "the join filter's result", separator)


def _filter_replace(args: list, kwargs: dict) -> None:
    text, old, new = (str(checked(value, "the replace filter's arguments")) for value in (args + [""] * 3)[:3])
    count = args[3] if len(args) > 3 else kwargs.get("count")
    check_replace(text, old, new, count if isinstance(count, int) else None, "the replace filter's result")


def _filter_wordwrap(args: list, kwargs: dict) -> None:
    text = str(checked(args[0], "the wordwrap filter's text"))
    width = args[1] if len(args) > 1 else kwargs.get("width", 79)
    wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring") or "\n"
    lines = len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
    if len(text) + lines * len(str(wrap)) > MAX_SIZE:
        raise too_big("the wordwrap filter's result", len(text) + lines * len(str(wrap)))


def _filter_format(args: list, kwargs: dict) -> None:
    check_printf(str(checked(args[0], "the format filter")), kwargs or tuple(args[1:]), "the format filter")


def _filter_count(position: int, keyword: str) -> Callable[[list, dict], None]:
    def check(args: list, kwargs: dict) -> None:
        at_most(args[position] if len(args) > position else kwargs.get(keyword), f"the {keyword} argument")

    return check


def _filter_sum(args: list, kwargs: dict) -> None:
    start = args[2] if len(args) > 2 else kwargs.get("start", 0)
    args[0] = bounded_list(itertools.chain([start], args[0]), "the sum filter's result")[1:]


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
        return checked(function(*args, **kwargs), f"the {name} filter's result")

    return bounded


def _ticking(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def ticking(*args: Any, **kwargs: Any) -> Any:
        tick()
        return function(*args, **kwargs)

    return ticking


class BoundedEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """An immutable sandbox whose every operation is sized and counted (see the module's docstring)."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "+", "%", "**"})
    tick = staticmethod(tick)
    bounded_buffer = BoundedBuffer
    bounded_concat = staticmethod(bounded_concat)
    concat = staticmethod(bounded_concat)  # joins macro and block buffers

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)
        self.globals.update(range=bounded_range, namespace=BoundedNamespace)
        kept = {name: function for name, function in self.filters.items() if name not in _REMOVED_FILTERS}
        self.filters = {name: _bounded_filter(name, function) for name, function in kept.items()}
        self.tests = {name: _ticking(function) for name, function in self.tests.items()}

    @staticmethod
    def bounded_literal(value: Any) -> Any:
        tick()
        measure(value, "a literal")
        return value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        tick()
        if operator == "*":
            check_repeat(left, right)
        elif operator == "+" and not (isinstance(left, (int, float)) and isinstance(right, (int, float))):
            if measure(left, "a + concatenation") + measure(right, "a + concatenation") > MAX_SIZE:
                raise too_big("a + concatenation", measure(left) + measure(right))
        elif operator == "%" and isinstance(left, str):
            check_printf(left, right)
        elif operator == "**":
            check_power(left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)):
            return None
        if value.__name__ not in ("format", "format_map"):
            return None
        template = value.__self__
        if not isinstance(template, str):
            return None
        formatter = BoundedFormatter(self)
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
        replacement = check_method(__obj, args, kwargs)
        left = current_budget()
        if left is not None:
            left.depth += 1
            if left.depth > MAX_DEPTH:
                raise TemplateLimitError(f"calls nest deeper than {MAX_DEPTH} (a recursive macro?)")
        try:
            result = replacement() if replacement is not None else super().call(__context, __obj, *args, **kwargs)
        finally:
            if left is not None:
                left.depth -= 1
        return checked(result, "a call's result")


def _finalize(value: Any) -> Any:
    """Every `{{ value }}` before str(): a container is measured (strings are bounded where they are built)."""
    return value if isinstance(value, str) else checked(value, "an output value")


_ENVIRONMENT = BoundedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, finalize=_finalize)


@functools.lru_cache(maxsize=32)  # a compiled 16 KB template is ~1 MB of code: few of them
def _compile(source: str) -> jinja2.Template:
    template = _ENVIRONMENT.from_string(source)
    # Each render copies the globals into its context; from a ChainMap (the template's over the environment's)
    # that copy walked both maps in Python, a quarter of a short prompt's render. Nothing changes them later.
    template.globals = dict(template.globals)
    return template


def render_bounded(
    source: str, variables: dict[str, Any], limit_bytes: int, *, seconds: float = RENDER_SECONDS, steps: int = MAX_STEPS
) -> str:
    """Render `source` with `variables`, stripped; raise TemplateLimitError on any bound, jinja's errors as they are."""
    if len(source) > MAX_TEMPLATE:
        raise TemplateLimitError(f"the template is {len(source):,} characters; at most {MAX_TEMPLATE:,}")
    try:
        with budget(seconds, steps):
            for name, value in variables.items():
                if value is None or (isinstance(value, str) and len(value) <= MAX_SIZE):
                    continue  # what measure() would count, without its walk: most variables are short text
                measure(value, f"the variable {name}")
            parts: list[str] = []
            size = 0
            for chunk in _compile(source).generate(variables):
                size += len(chunk)
                if size > MAX_SIZE:
                    raise too_big("the rendered text", size)
                parts.append(chunk)
    except RecursionError:
        raise TemplateLimitError("the template nests too deep (recursion)") from None
    text = "".join(parts).strip()
    size = len(text.encode("utf-8", "surrogateescape"))
    if size > limit_bytes:
        raise TemplateLimitError(f"renders {size:,} bytes; at most {limit_bytes:,} are allowed")
    return text
