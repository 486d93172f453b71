"""Reading YAML that people write: protocols, scene presets, model cards.

PyYAML's ``safe_load`` never runs code, but it accepts what a user never means
and can be made to hang: a duplicate key silently replaces the first, an alias
bomb ("billion laughs") expands a few hundred bytes into gigabytes, deep
nesting ends in ``RecursionError``, control characters end in a raw
``ReaderError``. :func:`load_yaml_file` refuses all of these up front, each
with a :class:`YAMLInputError` naming the file, the line and what was
expected, and then builds the same Python data ``safe_load`` would:

- files over :data:`MAX_BYTES` (read no further than that);
- text that is not UTF-8; control characters (C0 but tab, CR and LF; DEL; C1),
  line and paragraph separators, bidirectional overrides and a byte-order mark
  anywhere but at the start;
- collections nested deeper than :data:`MAX_DEPTH` (checked on the parser's
  event stream, which is iterative, before any recursive step), also through
  aliases;
- documents that expand (aliases followed) to more than :data:`MAX_NODES`
  values or more text than :data:`MAX_BYTES` (what is read is never much
  more than what was written), and recursive aliases;
- duplicate keys in a mapping (both lines named), keys that are not plain
  values, and any tag outside YAML's core schema (``!!python/...`` included:
  refused before anything is built, so no tag ever runs code);
- more than one document in the file.

The node tree comes back too, so that callers can name the line of a field.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from smartscope.errors import SmartscopeError, printable

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "YAMLDocument",
    "YAMLInputError",
    "key_lines",
    "line_for",
    "load_yaml_bytes",
    "load_yaml_file",
    "load_yaml_text",
]

#: Largest file read, bytes. Protocols are a few kB; 1 MB is room to spare.
MAX_BYTES = 1_000_000
#: Deepest nesting of mappings and lists (a protocol needs about 6).
MAX_DEPTH = 64
#: Most nodes (scalars, mappings, lists) a document may expand to, aliases followed.
MAX_NODES = 100_000

# libyaml when present (about 10x faster); the checks below do not depend on it
_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_BAD_CHARS = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)
_CHAR_NAMES = {
    0x00: "NUL",
    0x07: "BEL",
    0x08: "BS",
    0x0B: "VT",
    0x0C: "FF",
    0x1B: "ESC",
    0x7F: "DEL",
    0x85: "NEL",
    0x2028: "LINE SEPARATOR",
    0x2029: "PARAGRAPH SEPARATOR",
    0xFEFF: "BYTE ORDER MARK",
}
_ALLOWED_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}"
    for t in ("null", "bool", "int", "float", "str", "seq", "map", "timestamp", "merge")
)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLInputError(SmartscopeError, ValueError):
    """A YAML file was refused before (or while) it was read into data.

    ``problem`` says what was wrong; ``path`` and ``line`` (1-based, when
    known) say where. Callers usually re-raise it as their own error type
    (a protocol's :class:`~smartscope.protocol.ProtocolError`, a
    configuration's :class:`~smartscope.errors.ConfigError`).
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
    ) -> None:
        self.problem = problem
        self.path = Path(path) if path is not None else None
        self.line = line
        where = [str(path)] if path is not None else []
        if line is not None:
            where.append(f"line {line}")
        super().__init__(
            printable((", ".join(where) + ": " if where else "") + problem)
        )


@dataclass(frozen=True)
class YAMLDocument:
    """A YAML document read strictly: its data and its node tree."""

    data: Any
    """What ``yaml.safe_load`` would return (None for an empty document)."""
    node: yaml.Node | None
    """The composed root node (None for an empty document); see :func:`key_lines`."""


class _StrictLoader(_Loader):  # type: ignore[misc,valid-type]
    """SafeLoader whose constructors' own errors (a date that does not exist,
    an integer with 5,000 digits) are reported at the node's line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.MarkedYAMLError:
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError) as e:
            raise ConstructorError(
                None, None, f"cannot read this value: {e}", node.start_mark
            ) from e


def load_yaml_file(
    path: str | Path,
    *,
    what: str = "file",
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> YAMLDocument:
    """Read the YAML file ``path`` strictly (see the module docstring).

    ``what`` names the file in messages ("protocol", "scene preset").

    Raises
    ------
    YAMLInputError
        Naming the file and, where there is one, the line.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as e:
        raise YAMLInputError(
            f"cannot read the {what}: {e.strerror or e}", path=path
        ) from e
    if len(raw) > max_bytes:
        try:
            size = f"{path.stat().st_size:,} bytes"
        except OSError:
            size = "larger"
        raise YAMLInputError(
            f"the {what} is {size}; the limit is {max_bytes:,} bytes "
            f"({max_bytes / 1e6:g} MB)",
            path=path,
        )
    return load_yaml_bytes(
        raw, path=path, what=what, max_depth=max_depth, max_nodes=max_nodes
    )


def load_yaml_bytes(
    raw: bytes,
    *,
    path: str | Path | None = None,
    what: str = "file",
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> YAMLDocument:
    """:func:`load_yaml_text` for bytes, which must be UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        hint = ""
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = " (it starts with a UTF-16 byte-order mark: save it as UTF-8)"
        raise YAMLInputError(
            f"the {what} is not UTF-8 text: byte 0x{raw[e.start]:02x} at column "
            f"{column}{hint}",
            path=path,
            line=line,
        ) from None
    return load_yaml_text(
        text, path=path, what=what, max_depth=max_depth, max_nodes=max_nodes
    )


def load_yaml_text(
    text: str,
    *,
    path: str | Path | None = None,
    what: str = "file",
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> YAMLDocument:
    """Read YAML ``text`` strictly; ``path`` only names it in messages."""
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark is harmless at the start
        text = text[1:]
    _check_characters(text, path=path, what=what)
    _check_depth(text, path=path, max_depth=max_depth)
    loader = _StrictLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as e:
            raise _yaml_error(e, path, text) from None
        if node is None:
            return YAMLDocument(None, None)
        _check_graph(
            node,
            path=path,
            max_depth=max_depth,
            max_nodes=max_nodes,
            max_chars=max(MAX_BYTES, len(text)),
        )
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as e:
            raise _yaml_error(e, path, text) from None
    finally:
        loader.dispose()
    return YAMLDocument(data, node)


# ----------------------------------------------------------------- checks


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _check_characters(text: str, *, path: str | Path | None, what: str) -> None:
    m = _BAD_CHARS.search(text)
    if m is None:
        return
    code = ord(m.group())
    line, column = _position(text, m.start())
    name = _CHAR_NAMES.get(code) or unicodedata.name(m.group(), "control character")
    raise YAMLInputError(
        f"character U+{code:04X} ({name}) at column {column}: a {what} is plain "
        "text; remove it (a copy-paste from a terminal or a binary file?)",
        path=path,
        line=line,
    )


def _check_depth(text: str, *, path: str | Path | None, max_depth: int) -> None:
    """Nesting depth on the parser's event stream (iterative: no recursion)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    raise YAMLInputError(
                        f"mappings and lists nested more than {max_depth} deep",
                        path=path,
                        line=event.start_mark.line + 1,
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if "nesting depth" in str(e) and mark is not None:  # libyaml's own limit
            raise YAMLInputError(
                f"mappings and lists nested more than {max_depth} deep",
                path=path,
                line=mark.line + 1,
            ) from None
        raise _yaml_error(e, path, text) from None


def _check_graph(
    root: yaml.Node,
    *,
    path: str | Path | None,
    max_depth: int,
    max_nodes: int,
    max_chars: int,
) -> None:
    """Tags, keys, and the size and depth of the document with aliases expanded.

    Iterative post-order over the node graph, each node measured once
    (memoised), so an alias bomb is refused after visiting its few distinct
    nodes rather than its billions of expanded ones.
    """
    # id(node) -> (values, characters, depth) it expands to
    measured: dict[int, tuple[int, int, int]] = {}
    open_nodes: set[int] = set()  # ancestors of the node being visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            size, chars, depth = 1, 0, 0
            if isinstance(node, yaml.ScalarNode):
                chars = len(node.value)
            for child in _children(node):
                s, c, d = measured[id(child)]
                size, chars, depth = size + s, chars + c, max(depth, d)
            depth += isinstance(node, yaml.CollectionNode)
            line = node.start_mark.line + 1
            if size > max_nodes or chars > max_chars:
                what = (
                    f"{max_nodes:,} values"
                    if size > max_nodes
                    else f"{max_chars:,} characters"
                )
                raise YAMLInputError(
                    f"the document expands to more than {what} (aliases "
                    "followed); is it an alias bomb?",
                    path=path,
                    line=line,
                )
            if depth > max_depth:
                raise YAMLInputError(
                    f"mappings and lists nested more than {max_depth} deep "
                    "(aliases followed)",
                    path=path,
                    line=line,
                )
            measured[key] = (size, chars, depth)
            continue
        if key in measured:
            continue
        _check_node(node, path=path)
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise YAMLInputError(
                    "an alias refers to a mapping or list that contains it "
                    "(a recursive structure)",
                    path=path,
                    line=child.start_mark.line + 1,
                )
            if id(child) not in measured:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_tag(node: yaml.Node, *, path: str | Path | None) -> None:
    if node.tag not in _ALLOWED_TAGS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise YAMLInputError(
            f"the tag {tag!r} is not allowed: only plain data (mappings, lists, "
            "strings, numbers, booleans, null) is read, and no tag runs code",
            path=path,
            line=node.start_mark.line + 1,
        )


def _check_node(node: yaml.Node, *, path: str | Path | None) -> None:
    _check_tag(node, path=path)
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[tuple[str, str], int] = {}
    for k, _ in node.value:
        if k.tag == _MERGE_TAG:
            continue
        _check_tag(k, path=path)  # before the key's own shape: say what matters
        line = k.start_mark.line + 1
        if not isinstance(k, yaml.ScalarNode):
            raise YAMLInputError(
                "a key must be a plain value, not a mapping or a list",
                path=path,
                line=line,
            )
        ident = (k.tag, k.value)
        if ident in first:
            raise YAMLInputError(
                f"duplicate key {_short(k.value)!r} (first at line {first[ident]}, "
                f"again at line {line}); keep one",
                path=path,
                line=line,
            )
        first[ident] = line


def _yaml_error(
    e: yaml.YAMLError, path: str | Path | None, text: str = ""
) -> YAMLInputError:
    if not isinstance(e, yaml.MarkedYAMLError):
        detail = " ".join(str(e).split())
        return YAMLInputError(f"not valid YAML: {detail}", path=path)
    mark = e.problem_mark or e.context_mark
    problem = e.problem or e.context or "unreadable"
    if e.context and e.problem and e.context not in problem:
        problem = f"{e.context}, {problem}"
    line = mark.line + 1 if mark is not None else None
    if mark is not None and text and not text[mark.index :].strip():
        # found at the end of the file: name where the unfinished part starts
        start = e.context_mark if e.context_mark is not None else mark
        line = min(start.line + 1, max(1, len(text.splitlines())))
        problem += " (it runs to the end of the file: is the file cut short?)"
    elif mark is not None:
        problem += f" (column {mark.column + 1})"
    return YAMLInputError(f"not valid YAML: {problem}", path=path, line=line)


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


# ------------------------------------------------------------------ lines


def key_lines(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map each key path (``('reactions', 0, 'type')``) of a strictly read
    document to its 1-based line (its value's line for list items)."""
    out: dict[tuple[Any, ...], int] = {}
    if node is None:
        return out
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(node, ())]
    while stack:
        n, at = stack.pop()
        out.setdefault(at, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                sub = (*at, k.value)
                out.setdefault(sub, k.start_mark.line + 1)
                stack.append((v, sub))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                stack.append((v, (*at, i)))
    return out


def line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    """The line of the longest prefix of field path ``loc`` found in ``lines``
    (keys compared as strings, so ``('limits', 'max_laser_mw')`` matches)."""
    loc = tuple(str(x) if not isinstance(x, int) else x for x in loc)
    as_text = tuple(str(x) for x in loc)  # a mapping key that reads as a number
    for n in range(len(loc), -1, -1):
        for candidate in (loc[:n], as_text[:n]):
            if candidate in lines:
                return lines[candidate]
    return None
