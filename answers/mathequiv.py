r"""MATH-style scoring: extract the final answer and decide whether it equals the reference.

Extraction: the last ``\boxed{...}`` (or ``\fbox``), braces matched, else the
text after the last "answer is" / "Answer:". Normalisation removes what does
not change the value: ``\left``/``\right``, spacing commands, ``\text{}``
wrappers, units, degrees, dollar and percent signs, an "x =" prefix, a trailing
period, thousands commas; it rewrites ``\dfrac``/``\tfrac`` to ``\frac`` and
brace-less ``\frac43``/``\sqrt2``. Equal normalised strings match. Otherwise
tuples, intervals (brackets must agree), matrices and lists (order-free) compare
part by part, and each part is compared by value with sympy: the LaTeX is
translated to a small expression language (numbers, single-letter symbols,
+ - * / ^, a few functions); rational numbers compare exactly, other numbers
numerically, expressions with symbols at fixed sample points.

Safety: sympy's parser evaluates Python, so the translation admits only that
whitelist, rejects long inputs and large powers (``9^{9^9}`` would take
forever). When sympy is missing (it is the ``math`` extra) or cannot decide,
the verdict falls back to string equality.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

MAX_EXPR_CHARS = 200
MAX_EXPONENT = 1000
MAX_OPS = 150
REL_TOLERANCE = 1e-8
SAMPLE_POINTS = (0.3183, 1.4142, 2.7183)
FUNCTIONS = ("sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp")
CONSTANTS = {"pi": "pi", "infty": "oo"}
OPERATORS = {"cdot": "*", "times": "*", "div": "/"}
TEXT_COMMANDS = ("text", "textbf", "textit", "mbox", "mathrm", "mathbf", "operatorname")
ROW_BREAK, ROW_MARK = "\\\\", "\x00"
SPACING = (r"\!", r"\,", r"\;", r"\:", r"\quad", r"\qquad", "~")
UNIT_WORDS = (
    "square units|square feet|square inches|square meters|square centimeters|sq units|units|unit|"
    "degrees|degree|inches|inch|feet|foot|ft|yards|yard|miles|mile|mph|meters|meter|"
    "centimeters|centimeter|cm|mm|km|kilometers|hours|hour|hrs|minutes|minute|mins|seconds|"
    "second|days|day|weeks|week|years|year|cents|cent|dollars|dollar|pounds|pound|ounces|"
    "ounce|liters|liter|gallons|gallon|grams|gram|kg|people|students|ways"
)
UNIT_RE = re.compile(r"(?<=[\d}\s)])\s*(?:" + UNIT_WORDS + r")(?:\^\{?[23]\}?)?\s*$", re.IGNORECASE)
PREFIX_RE = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\s*(?:=|\\in)(?!=)")
THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
ANSWER_RE = re.compile(r"answer\s*(?:is|:)\s*", re.IGNORECASE)
TOKEN_RE = re.compile(r"\s*(\d+\.?\d*|\.\d+|[A-Za-z]+|\*\*|[-+*/^()])")



@functools.cache
def _sympy() -> Any:
    """sympy, imported on first use (it takes a quarter of a second, and majority_vote agents
    read most answers without it), or None without the ``math`` extra: then equivalence is by
    normalised string only."""
    try:
        import sympy
        import sympy.parsing.sympy_parser
    except ImportError:  # pragma: no cover - exercised only without the extra
        return None
    return sympy


# ---------------------------------------------------------------- extraction


def brace_group(text: str, start: int) -> tuple[str, int] | None:
    """The contents of the brace group opening at ``text[start]`` and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    r"""Contents of the last ``\boxed{...}``/``\fbox{...}`` (``\boxed 5`` too), or None."""
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)", text)]
    for match in reversed(starts):
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        group = brace_group(text, i)
        if group is not None:
            return group[0]
        bare = re.match(r"[^\s$]+", text[i:])
        if bare:
            return bare.group(0)
    return None


def extract_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    markers = list(ANSWER_RE.finditer(text))
    if not markers:
        return None
    tail = text[markers[-1].end() :].strip().split("\n")[0]
    math_span = re.match(r"\$+([^$]+)\$+", tail)
    answer = math_span.group(1) if math_span else tail
    answer = re.sub(r"\.\s*(?:I hope it is correct\.?)?$", "", answer.strip())
    return answer.strip() or None


# ------------------------------------------------------------- normalisation


def _unwrap_commands(s: str, names: tuple[str, ...]) -> str:
    pattern = re.compile(r"\\(?:" + "|".join(names) + r")\s*(?=\{)")
    while match := pattern.search(s):
        group = brace_group(s, match.end())
        if group is None:
            return s[: match.start()] + s[match.end() :]
        s = s[: match.start()] + group[0] + s[group[1] :]
    return s


def _argument(s: str, i: int) -> tuple[str, int] | None:
    """A macro argument: a brace group, a \\command, or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] == "{":
        return brace_group(s, i)
    if s[i] == "\\":
        m = re.match(r"\\[a-zA-Z]+", s[i:])
        if m:
            return m.group(0), i + m.end()
    return s[i], i + 1


def _brace_args(s: str, macro: str, count: int) -> str:
    r"""``\frac43`` -> ``\frac{4}{3}``, ``\sqrt2`` -> ``\sqrt{2}`` (already braced: unchanged)."""
    out, i = [], 0
    while (j := s.find(macro, i)) >= 0:
        end = j + len(macro)
        if end < len(s) and s[end].isalpha():  # another command (\fracx is not ours)
            out.append(s[i:end])
            i = end
            continue
        out.append(s[i:end])
        k = end
        if macro == r"\sqrt" and k < len(s) and s[k] == "[":
            close = s.find("]", k)
            if close < 0:
                break
            out.append(s[k : close + 1])
            k = close + 1
        for _ in range(count):
            arg = _argument(s, k)
            if arg is None:
                break
            out.append("{" + _brace_args(arg[0], macro, count) + "}")
            k = arg[1]
        i = k
    out.append(s[i:])
    return "".join(out)


def normalize(answer: str) -> str:
    """Canonical text of an answer; equal results mean equal answers."""
    s = answer.strip().replace("\n", " ")
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])", "", s)
    s = s.replace(ROW_BREAK, ROW_MARK)  # keep matrix rows apart from "\ " (a space)
    for spacing in SPACING:
        s = s.replace(spacing, " ")
    s = s.replace("\\ ", " ").replace(ROW_MARK, ROW_BREAK)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("°", "")
    s = _unwrap_commands(s, TEXT_COMMANDS)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    for _ in range(2):
        s = UNIT_RE.sub("", s).strip()
    s = s.rstrip(" .")
    prefix = PREFIX_RE.match(s)
    if prefix and s.count("=") <= 1:
        s = s[prefix.end() :]
    s = _brace_args(s, r"\frac", 2)
    s = _brace_args(s, r"\sqrt", 1)
    s = re.sub(r"\s+", "", s)
    if THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    s = re.sub(r"(?<![\d}])\.(\d)", r"0.\1", s)
    s = re.sub(r"(\d)\\frac", r"\1+\\frac", s)  # mixed number 1\frac{4}{5}
    letter = re.fullmatch(r"\(?([A-Z])\)?", s)
    if letter:
        s = letter.group(1)
    if re.fullmatch(r"[A-Za-z]{2,}", s):
        s = s.lower()
    return s


# -------------------------------------------------------------- structures


def _split_top(s: str, seps: str = ",") -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch in seps and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += (ch in "([{") - (ch in ")]}")
        if depth < 0:
            return False
    return depth == 0


def _matrix(s: str) -> list[list[str]] | None:
    m = re.fullmatch(r"\\begin\{[pbv]?matrix\}(.*)\\end\{[pbv]?matrix\}", s)
    if not m:
        return None
    return [row.split("&") for row in m.group(1).split(ROW_BREAK) if row]


def _structure(s: str) -> tuple[str, list[str]]:
    """("tuple"+brackets, parts) | ("set", parts) | ("atom", [s])."""
    if s.startswith(r"\{") and s.endswith(r"\}"):
        return "set", [x for part in _split_top(s[2:-2]) for x in _plus_minus(part)]
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _balanced(s[1:-1]):
        parts = _split_top(s[1:-1])
        if len(parts) > 1:
            return "tuple" + s[0] + s[-1], parts
    parts = [x for part in _split_top(s) for x in _plus_minus(part)]
    if len(parts) > 1:
        return "set", parts
    return "atom", [s]


def _plus_minus(s: str) -> list[str]:
    r"""``a \pm b`` stands for two answers."""
    if s.count(r"\pm") == 1:
        return [s.replace(r"\pm", "+"), s.replace(r"\pm", "-")]
    return [s]


def equivalent(candidate: str, reference: str) -> bool:
    """Whether two answer strings (LaTeX or plain) denote the same answer."""
    return _equal_normalized(normalize(candidate), normalize(reference))


def _equal_normalized(a: str, b: str) -> bool:
    if a == b:
        return True
    ma, mb = _matrix(a), _matrix(b)
    if ma is not None or mb is not None:
        if ma is None or mb is None or [len(r) for r in ma] != [len(r) for r in mb]:
            return False
        return all(_equal_normalized(x, y) for ra, rb in zip(ma, mb) for x, y in zip(ra, rb))
    kind_a, parts_a = _structure(a)
    kind_b, parts_b = _structure(b)
    if kind_a == kind_b == "atom":
        return _equal_values(a, b)
    if kind_a != kind_b or len(parts_a) != len(parts_b):
        return False
    if kind_a.startswith("tuple"):
        return all(_equal_normalized(x, y) for x, y in zip(parts_a, parts_b))
    unmatched = list(parts_b)
    for x in parts_a:
        hit = next((y for y in unmatched if _equal_normalized(x, y)), None)
        if hit is None:
            return False
        unmatched.remove(hit)
    return True


# -------------------------------------------------------------------- sympy


def _latex_to_expr(s: str) -> str | None:
    """Whitelisted expression text for sympy's parser, or None when outside the language."""
    out: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            m = re.match(r"\\([a-zA-Z]+)", s[i:])
            if not m:
                return None
            name, i = m.group(1), i + m.end()
            if name == "frac":
                num, den = _argument(s, i), None
                if num is not None:
                    den = _argument(s, num[1])
                if num is None or den is None:
                    return None
                a, b = _latex_to_expr(num[0]), _latex_to_expr(den[0])
                if a is None or b is None:
                    return None
                out.append(f"(({a})/({b}))")
                i = den[1]
            elif name == "sqrt":
                root = None
                if i < len(s) and s[i] == "[":
                    close = s.find("]", i)
                    root = _latex_to_expr(s[i + 1 : close]) if close > 0 else None
                    if root is None:
                        return None
                    i = close + 1
                arg = _argument(s, i)
                inner = _latex_to_expr(arg[0]) if arg else None
                if arg is None or inner is None:
                    return None
                out.append(f"sqrt({inner})" if root is None else f"(({inner})**(1/({root})))")
                i = arg[1]
            elif name in CONSTANTS:
                out.append(f" {CONSTANTS[name]} ")
            elif name in OPERATORS:
                out.append(OPERATORS[name])
            elif name in FUNCTIONS:
                out.append(f" {name}")
            else:
                return None
        elif ch in "{":
            out.append("(")
            i += 1
        elif ch in "}":
            out.append(")")
            i += 1
        else:
            out.append(ch)
            i += 1
    return _whitelist("".join(out))


def _whitelist(expr: str) -> str | None:
    """Explicit-multiplication expression from whitelisted tokens only (no names, no dots
    outside numbers, no underscores), so handing it to sympy's eval-based parser is safe."""
    if len(expr) > MAX_EXPR_CHARS:
        return None
    tokens: list[str] = []
    pos = 0
    for m in TOKEN_RE.finditer(expr):
        if m.start() != pos:
            return None
        pos = m.end()
        tok = m.group(1)
        if tok.isalpha() and tok not in FUNCTIONS and tok not in ("pi", "oo"):
            tokens.extend(tok)  # xy is x*y
        else:
            tokens.append(tok)
    if expr[pos:].strip() or not tokens:
        return None
    pieces: list[str] = []
    prev_operand = False
    for tok in tokens:
        starts = tok == "(" or tok[0].isalnum() or tok[0] == "."
        if prev_operand and starts:
            pieces.append("*")
        pieces.append(tok)
        prev_operand = tok == ")" or (tok[0].isalnum() or tok[0] == ".") and tok not in FUNCTIONS
    return " ".join(pieces)


def _parse(expr: str) -> Any:
    sympy = _sympy()
    parser = sympy.parsing.sympy_parser
    parse_expr, convert_xor = parser.parse_expr, parser.convert_xor
    standard_transformations = parser.standard_transformations
    names = {name: getattr(sympy, name) for name in FUNCTIONS if name != "ln"}
    names.update(ln=sympy.log, pi=sympy.pi, oo=sympy.oo)
    letters = {t: sympy.Symbol(t) for t in set(re.findall(r"\b[a-zA-Z]\b", expr))}
    local = {**letters, **names}
    transformations = (*standard_transformations, convert_xor)
    parsed = parse_expr(expr, local_dict=local, transformations=transformations, evaluate=False)
    for node in sympy.preorder_traversal(parsed):
        if isinstance(node, sympy.Pow):
            exponent = node.exp
            if exponent.is_Number and abs(exponent) > MAX_EXPONENT:
                return None
            if not exponent.is_Number and not exponent.free_symbols:
                return None  # 9^(9^9): a numeric tower
    if sympy.count_ops(parsed) > MAX_OPS:
        return None
    # Guarded: now evaluating is cheap, and exact numbers become Rationals.
    return parse_expr(expr, local_dict=local, transformations=transformations)


def _sympy_value(s: str) -> Any:
    sympy = _sympy()
    if sympy is None or "=" in s:
        return None
    expr = _latex_to_expr(s)
    if expr is None:
        return None
    try:
        return _parse(expr)
    except (
        SyntaxError,
        TypeError,
        ValueError,
        AttributeError,
        ZeroDivisionError,
        RecursionError,
        sympy.SympifyError,
    ):
        return None


def _close(x: complex, y: complex) -> bool:
    if any(math.isnan(v) for v in (x.real, x.imag, y.real, y.imag)):
        return False
    if math.isinf(abs(x)) or math.isinf(abs(y)):
        return x == y
    return abs(x - y) <= REL_TOLERANCE * max(1.0, abs(y))


def _numeric(expr: Any, point: dict[Any, float]) -> complex | None:
    try:
        value = complex(_sympy().N(expr.subs(point) if point else expr, 20))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
        return None
    return value


def _equal_values(a: str, b: str) -> bool:
    if len(a) > 1 and a.isalpha() and a.lower() == b.lower():
        return True
    ea, eb = _sympy_value(a), _sympy_value(b)
    if ea is None or eb is None:
        return False
    if ea.is_Rational and eb.is_Rational:
        return bool(ea == eb)
    symbols = sorted(ea.free_symbols | eb.free_symbols, key=str)
    points: list[dict[Any, float]] = [{}]
    if symbols:
        points = [
            {
                sym: SAMPLE_POINTS[(k + j) % len(SAMPLE_POINTS)] + 0.1 * j
                for j, sym in enumerate(symbols)
            }
            for k in range(len(SAMPLE_POINTS))
        ]
    compared = 0
    for point in points:
        x, y = _numeric(ea, point), _numeric(eb, point)
        if x is None or y is None:
            continue
        if not _close(x, y):
            return False
        compared += 1
    return compared > 0
