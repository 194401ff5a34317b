"""Just enough of Terraform's language to scaffold a config: module calls, providers, the backend.

A full HCL parser (``python-hcl2``) would be a dependency, a grammar and its bugs to carry for
three facts per file. What they need is to *not* be fooled: a ``module`` block in a comment, in a
heredoc or inside a string is no module call, and a brace inside a string is no block. So this is
a tokenizer that knows HCL's comments (``#``, ``//``, ``/* */``), quoted strings with their
template sequences (``${ ... }``, nested strings included, ``$${`` as an escape) and heredocs,
followed by a brace-depth walk that looks only at top-level blocks:

- ``module "NAME" { source = "..." }``: the source, when it is a literal string (an interpolated
  one is reported as such: it names no folder this can follow);
- ``provider "NAME" { ... }``;
- ``terraform { backend "TYPE" { ... } }`` (with the names of the attributes it sets) or
  ``terraform { cloud { ... } }``.

``*.tf.json`` files say the same things in JSON (Terraform's JSON syntax); ``scan_json`` reads them.
The scanner never raises on odd input: what it cannot read becomes a ``problems`` line.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_NESTING = 64  # template sequences inside strings inside template sequences...
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_PUNCT = "{}[]()=,"


@dataclass(frozen=True)
class ModuleCall:
    """``module "name" { source = ... }``; ``source`` None: not a literal string."""

    name: str
    source: str | None
    line: int


@dataclass(frozen=True)
class Backend:
    """Where the root keeps its state: ``backend "s3" {...}`` (kind ``s3``) or ``cloud {...}``
    (kind ``cloud``), with the attributes the block sets (``bucket``, ``key``, ...)."""

    kind: str
    attributes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HclFacts:
    """What one file (or, merged, one folder) says about itself."""

    modules: tuple[ModuleCall, ...] = ()
    providers: tuple[str, ...] = ()
    backend: Backend | None = None
    problems: tuple[str, ...] = ()

    def merge(self, other: HclFacts) -> HclFacts:
        return HclFacts(self.modules + other.modules, self.providers + other.providers,
                        self.backend or other.backend, self.problems + other.problems)


@dataclass(frozen=True)
class Token:
    kind: str  # ident, string, punct, newline, other
    text: str
    line: int
    literal: bool = True  # a string without template sequences (its text is its value)


# ---- tokens ----------------------------------------------------------------------------------
@dataclass
class _Lexer:
    text: str
    pos: int = 0
    line: int = 1
    problems: list[str] = field(default_factory=list)

    def tokens(self) -> Iterator[Token]:
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            start_line = self.line
            if ch == "\n":
                self.pos += 1
                self.line += 1
                yield Token("newline", "\n", start_line)
            elif ch in " \t\r\ufeff":
                self.pos += 1
            elif ch == "#" or text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    self.problems.append(f"line {start_line}: a /* comment is not closed")
                    end = n
                self.line += text.count("\n", self.pos, end)
                self.pos = min(n, end + 2)
            elif ch == '"':
                value, literal = self._string(0)
                yield Token("string", value, start_line, literal)
            elif text.startswith("<<", self.pos) and self._heredoc():
                yield Token("string", "", start_line, literal=False)
            elif ch.isalpha() or ch == "_":
                end = self.pos + 1
                while end < n and (text[end].isalnum() or text[end] in "_-"):
                    end += 1
                yield Token("ident", text[self.pos:end], start_line)
                self.pos = end
            elif text.startswith(("==", "!=", "<=", ">=", "=>", "&&", "||"), self.pos):
                yield Token("other", text[self.pos:self.pos + 2], start_line)
                self.pos += 2
            else:
                self.pos += 1
                yield Token("punct" if ch in _PUNCT else "other", ch, start_line)

    def _string(self, depth: int) -> tuple[str, bool]:
        """A quoted string from its opening quote; returns (its text, whether it is literal)."""
        text, n = self.text, len(self.text)
        self.pos += 1
        out: list[str] = []
        literal = True
        while self.pos < n:
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out), literal
            if ch == "\n":  # quoted strings are one line: this one was never closed
                break
            if ch == "\\" and self.pos + 1 < n:
                out.append(self._escape())
                continue
            if ch in "$%" and text.startswith(ch + ch + "{", self.pos):  # $${ is a literal ${
                out.append(ch + "{")
                self.pos += 3
                continue
            if ch in "$%" and text.startswith(ch + "{", self.pos):
                literal = False
                self._template(depth + 1)
                continue
            out.append(ch)
            self.pos += 1
        self.problems.append(f"line {self.line}: a quoted string is not closed")
        return "".join(out), False

    def _escape(self) -> str:
        code = self.text[self.pos + 1]
        if code in "uU":
            width = 4 if code == "u" else 8
            digits = self.text[self.pos + 2:self.pos + 2 + width]
            self.pos += 2 + width
            try:
                return chr(int(digits, 16))
            except ValueError:
                return "\ufffd"
        self.pos += 2
        return _ESCAPES.get(code, code)

    def _template(self, depth: int) -> None:
        """Skip a ``${ ... }`` or ``%{ ... }`` sequence: braces and strings nest inside it."""
        text, n = self.text, len(self.text)
        self.pos += 2
        braces = 1
        while self.pos < n and braces:
            ch = text[self.pos]
            if ch == '"' and depth < MAX_NESTING:
                self._string(depth)
                continue
            if ch == "\n":
                self.line += 1
            braces += {"{": 1, "}": -1}.get(ch, 0)
            self.pos += 1

    def _heredoc(self) -> bool:
        """``<<EOT`` / ``<<-EOT`` up to the line that is the marker alone; False if not a heredoc."""
        text = self.text
        head_end = text.find("\n", self.pos)
        head = text[self.pos + 2:head_end if head_end >= 0 else len(text)].strip()
        marker = head.removeprefix("-")
        if not marker or not (marker[0].isalpha() or marker[0] == "_") or \
                not all(c.isalnum() or c in "_-" for c in marker) or head_end < 0:
            return False
        self.pos = head_end + 1
        self.line += 1
        while self.pos < len(text):
            end = text.find("\n", self.pos)
            line = text[self.pos:end if end >= 0 else len(text)]
            self.pos = len(text) if end < 0 else end  # the newline after the marker stays a token
            if line.strip() == marker:
                return True
            if end >= 0:
                self.pos += 1
                self.line += 1
        self.problems.append(f"heredoc <<{head} is not closed")
        return True


def tokens(text: str) -> list[Token]:
    return list(_Lexer(text).tokens())


# ---- blocks ----------------------------------------------------------------------------------
@dataclass
class _Frame:
    kind: str  # block, expr
    type: str = ""
    labels: tuple[str, ...] = ()
    outer: list[Token] = field(default_factory=list)  # expr: the statement it interrupts
    outer_nest: int = 0


def scan(text: str) -> HclFacts:
    """The module calls, providers and backend of one ``*.tf`` file."""
    lexer = _Lexer(text)
    stack: list[_Frame] = []
    stmt: list[Token] = []
    nest = 0  # ( and [ inside the current statement: a newline there does not end it
    modules: list[ModuleCall] = []
    open_module: list[Any] = []  # [name, source, line, source seen] of the module block being read
    providers: list[str] = []
    backend_kind: str | None = None
    backend_attrs: set[str] = set()

    def path() -> tuple[str, ...]:
        return tuple(f.type for f in stack)

    def finish() -> None:
        """A statement of the innermost block ended: an attribute, if it is one we read."""
        nonlocal stmt
        if len(stmt) >= 2 and stmt[0].kind == "ident" and stmt[1].text == "=" and stmt[1].kind == "punct":
            where = path()
            if where == ("module",) and stmt[0].text == "source" and open_module and not open_module[3]:
                simple = len(stmt) == 3 and stmt[2].kind == "string" and stmt[2].literal
                open_module[1], open_module[3] = (stmt[2].text if simple else None), True
            elif where in (("terraform", "backend"), ("terraform", "cloud")):
                backend_attrs.add(stmt[0].text)
        stmt = []

    for tok in lexer.tokens():
        top = stack[-1] if stack else None
        if top is not None and top.kind == "expr":  # inside an object or a for expression: braces only
            if tok.text == "{" and tok.kind == "punct":
                stack.append(_Frame("expr"))
            elif tok.text == "}" and tok.kind == "punct":
                stack.pop()
                if stack and stack[-1].kind == "block" or not stack:
                    stmt, nest = top.outer + [Token("other", "{}", tok.line)], top.outer_nest
            continue
        if tok.kind == "newline":
            if nest == 0:
                finish()
            continue
        if tok.kind == "punct" and tok.text in "([":
            nest += 1
        elif tok.kind == "punct" and tok.text in ")]":
            nest = max(0, nest - 1)
        elif tok.kind == "punct" and tok.text == "{":
            header = nest == 0 and stmt and stmt[0].kind == "ident" and \
                all(t.kind == "ident" or t.kind == "string" and t.literal for t in stmt[1:])
            if not header:
                stack.append(_Frame("expr", outer=stmt, outer_nest=nest))
                stmt, nest = [], 0
                continue
            block = _Frame("block", stmt[0].text, tuple(t.text for t in stmt[1:]))
            where = path()
            if where == () and block.type == "module" and len(block.labels) == 1:
                open_module[:] = [block.labels[0], None, stmt[0].line, False]
            elif where == () and block.type == "provider" and len(block.labels) == 1:
                providers.append(block.labels[0])
            elif where == ("terraform",) and block.type == "backend" and len(block.labels) == 1:
                backend_kind = block.labels[0]
            elif where == ("terraform",) and block.type == "cloud" and not block.labels:
                backend_kind = "cloud"
            stack.append(block)
            stmt = []
            continue
        elif tok.kind == "punct" and tok.text == "}":
            finish()
            if not stack:
                lexer.problems.append(f"line {tok.line}: a '}}' closes no block")
                continue
            closed = stack.pop()
            if not stack and closed.type == "module" and open_module:
                modules.append(ModuleCall(open_module[0], open_module[1], open_module[2]))
                open_module.clear()
            nest = 0
            continue
        stmt.append(tok)
    finish()
    if stack:
        lexer.problems.append(f"{len(stack)} block(s) not closed at the end of the file")
    backend = Backend(backend_kind, frozenset(backend_attrs)) if backend_kind else None
    return HclFacts(tuple(modules), tuple(providers), backend, tuple(lexer.problems))


def scan_json(text: str) -> HclFacts:
    """The same facts from a ``*.tf.json`` file (Terraform's JSON syntax: a block type maps to a
    mapping of labels, or to a list of such mappings)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return HclFacts(problems=(f"not valid JSON: {str(exc)[:200]}",))
    if not isinstance(doc, dict):
        return HclFacts(problems=("not a JSON object",))
    modules = []
    for calls in _objects(doc.get("module")):
        for name, bodies in calls.items():
            for body in _objects(bodies):
                source = body.get("source")
                literal = isinstance(source, str) and "${" not in source.replace("$${", "")
                modules.append(ModuleCall(str(name), source if literal else None, 0))
    providers = [str(name) for block in _objects(doc.get("provider")) for name in block]
    backend = None
    for block in _objects(doc.get("terraform")):
        for kind, bodies in _objects_by_label(block.get("backend")):
            attrs = {k for body in _objects(bodies) for k in body}
            backend = backend or Backend(kind, frozenset(attrs))
        if "cloud" in block:
            backend = backend or Backend("cloud", frozenset(k for b in _objects(block["cloud"]) for k in b))
    return HclFacts(tuple(modules), tuple(providers), backend)


def _objects(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def _objects_by_label(value: Any) -> list[tuple[str, Any]]:
    return [(str(label), body) for block in _objects(value) for label, body in block.items()]
