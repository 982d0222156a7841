"""How the pinned vLLM spells `vllm serve` flags, and a parser of ``extra_args`` that behaves
like the real one.

The flag table ``kit/data/vllm_serve_flags.json`` is generated from the REAL `vllm serve`
argument parsers of the table versions (``realengine/dump_serve_flags.py --build``). A version
between two table versions uses the nearest older one (its *row*); versions newer than the last
row use the last row. The rewriting rules below switch at rows too (vLLM changed them somewhere
between two rows).

:func:`parse_serve_args` reproduces, for the flags after the model in ``vllm serve MODEL ...``:

1. vLLM's ``FlexibleArgumentParser.parse_args`` rewriting (read in the released source of every
   table version):

   - ``--flag_name`` and ``--flag_name=value``: underscores become dashes in the name only
     (0.8.5: the whole name; from 0.9.2: only up to the first ``.``);
   - dotted JSON keys (from 0.9.2): any token that starts with ``-`` and has a ``.`` in its name
     (``--compilation-config.level 3``, ``--x.y=1``, ``--x.list+ a,b``) becomes ``--x '{json}'``;
     the value is the next token, whatever it looks like. A negative decimal such as ``-0.5``
     is caught by this rule too (vLLM reads it as option ``-0`` with key ``5``);
   - ``-O3``, ``-O=3``, ``-Ox``: from 0.13.0 ``--optimization-level x``; 0.9.2-0.11.0
     ``-O.level=x`` (``-O`` is an alias of ``--compilation-config`` there); 0.8.5 leaves it to
     argparse (``-O`` with an attached value). ``-O N`` with N in 0-3 likewise;
   - ``--help=WORD`` is ``--help`` (from 0.11.0);
   - ``--model`` as its own token is a ValueError before 0.13.0; from 0.13.0 its value replaces
     the positional model (which then is an unrecognized argument).

2. Python 3.11 argparse on the serve subparser (``allow_abbrev`` is on in every table version:
   vLLM never turns it off): exact option strings, ``--opt=value``, unique prefixes of long
   options (``--gpu-memory-util 0.5``) and of single-dash ones (``-t`` for ``-tp``), single-dash
   options with an attached value (``-q fp8`` as ``-qfp8``), ``-1`` read as a value because no
   serve option looks like a negative number (``-0.5`` too, but only 0.8.5 lets it reach
   argparse: see the dotted rule), ``--`` ending the options, ``nargs`` (0, 1, ``?``, ``*``,
   ``+``) and ``choices``. Values are not type-checked (``--max-model-len abc`` passes here).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from kit.vllm_versions import Version

Nargs = int | str  # 0, 1, N, "?", "*", "+"

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's _negative_number_matcher
_O_LEVELS = frozenset({"0", "1", "2", "3"})


@dataclass(frozen=True)
class FlagSpec:
    """One `vllm serve` option in one table version."""

    flag: str
    aliases: tuple[str, ...] = ()
    #: ``--no-X`` spellings a BooleanOptionalAction adds
    negations: tuple[str, ...] = ()
    nargs: Nargs = 1
    #: plain-string choices argparse checks (None: not recorded)
    choices: tuple[str, ...] | None = None

    @property
    def takes_value(self) -> bool:
        return self.nargs != 0

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.flag, *self.aliases, *self.negations)


@dataclass(frozen=True)
class FlagUse:
    """A flag found in the arguments."""

    flag: str
    values: tuple[str, ...]
    #: indices of the original tokens (the flag and its values)
    indices: tuple[int, ...]
    #: the option as written (name part only: no ``=value``)
    spelling: str
    negated: bool = False
    #: ``level`` for ``--compilation-config.level 3`` (dotted JSON key)
    subkey: str | None = None
    #: written as a unique prefix of the option (argparse's allow_abbrev)
    abbreviated: bool = False

    @property
    def value(self) -> str | None:
        return self.values[0] if len(self.values) == 1 else None


@dataclass(frozen=True)
class ParsedArgs:
    version: Version
    #: the table version whose parser was used (see module doc)
    row: str
    items: tuple[FlagUse, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exact_row(self) -> bool:
        """True when the pinned version is itself a table version."""
        return _row_version(self.row) == self.version

    def get(self, flag: str) -> FlagUse | None:
        """The last use of canonical ``flag`` (argparse: the last one wins)."""
        found = [u for u in self.items if u.flag == flag]
        return found[-1] if found else None


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Variant:
    first: int
    last: int
    spec: FlagSpec


@dataclass(frozen=True)
class _Table:
    rows: tuple[str, ...]
    flags: dict[str, tuple[_Variant, ...]]
    parsers: dict[str, dict[str, Any]] = field(default_factory=dict)


def _row_version(text: str) -> Version:
    return Version.parse(text)


@cache
def _table() -> _Table:
    path = resources.files("kit").joinpath("data", "vllm_serve_flags.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = tuple(data["versions"])
    index = {r: i for i, r in enumerate(rows)}
    flags: dict[str, tuple[_Variant, ...]] = {}
    for name, variants in data["flags"].items():
        out = []
        for v in variants:
            choices = v.get("choices")
            spec = FlagSpec(
                flag=name,
                aliases=tuple(v.get("aliases", ())),
                negations=tuple(v.get("negations", ())),
                nargs=v["nargs"],
                choices=tuple(choices) if choices is not None else None,
            )
            out.append(_Variant(index[v["first"]], index[v["last"]], spec))
        flags[name] = tuple(out)
    return _Table(rows, flags, dict(data.get("parsers", {})))


def table_versions() -> tuple[str, ...]:
    """The table versions (rows), oldest first, as vLLM spells them (``0.10.1.1``)."""
    return _table().rows


def table_row(version: Version) -> str:
    """The table version whose parser stands for ``version``: the nearest older row (the
    oldest row for anything older, the newest for anything newer)."""
    rows = _table().rows
    best = rows[0]
    for r in rows:
        if not version < _row_version(r):
            best = r
    return best


@cache
def _row_flags(row: str) -> dict[str, FlagSpec]:
    t = _table()
    i = t.rows.index(row)
    out = {}
    for name, variants in t.flags.items():
        for var in variants:
            if var.first <= i <= var.last:
                out[name] = var.spec
    return out


@cache
def _row_options(row: str) -> dict[str, FlagSpec]:
    """Every option string of the row (flag, aliases, negations) -> its spec."""
    return {s: spec for spec in _row_flags(row).values() for s in spec.spellings}


def flags_in(version: Version) -> dict[str, FlagSpec]:
    """Canonical flag -> spec for the parser that stands for ``version``."""
    return dict(_row_flags(table_row(version)))


def lookup(name: str, version: Version) -> FlagSpec | None:
    """The spec of an exact spelling (``--flag_name`` allowed, no prefixes), or None."""
    return _row_options(table_row(version)).get(normalize(name, version).partition("=")[0])


def takes_value(flag: str, version: Version) -> bool:
    """Whether ``flag`` (any exact spelling) takes a value in ``version``; ValueError if the
    version has no such flag."""
    spec = lookup(flag, version)
    if spec is None:
        raise ValueError(f"vLLM {version} has no flag {flag}")
    return spec.takes_value


def flag_history(flag: str) -> list[tuple[str, str]]:
    """``[(first row, last row), ...]`` in which canonical ``flag`` (or an alias) exists."""
    t = _table()
    spans: list[tuple[int, int]] = []
    for name, variants in t.flags.items():
        for var in variants:
            if flag in var.spec.spellings or name == flag:
                spans.append((var.first, var.last))
    spans.sort()
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(t.rows[a], t.rows[b]) for a, b in merged]


# --- vLLM's own rewriting ----------------------------------------------------------------------


def _era(row: str) -> int:
    """0: 0.8.5 rules; 1: 0.9.2-0.11.0 (dotted keys, -O.level); 2: 0.13.0+ (--optimization-level)."""
    v = _row_version(row)
    if v < Version(0, 9, 2):
        return 0
    if v < Version(0, 13, 0):
        return 1
    return 2


def _dashes(token: str, era: int) -> str:
    name, eq, value = token.partition("=")
    if era == 0:
        name = "--" + name[2:].replace("_", "-")
    else:
        head, dot, tail = name[2:].partition(".")
        name = "--" + head.replace("_", "-") + dot + tail
    return name + eq + value


def _rewrite(args: Sequence[str], row: str) -> list[tuple[str, int]]:
    """FlexibleArgumentParser's first pass: (token, original index)."""
    era = _era(row)
    help_kw = not _row_version(row) < Version(0, 11, 0)
    out: list[tuple[str, int]] = []
    for i, arg in enumerate(args):
        if help_kw and arg.startswith("--help="):
            out.append(("--help", i))
        elif arg.startswith("--"):
            out.append((_dashes(arg, era), i))
        elif era and arg.startswith("-O") and arg != "-O" and (era == 2 or arg[2] != "."):
            level = arg[3:] if arg[2] == "=" else arg[2:]
            if era == 1:
                out.append((f"-O.level={level}", i))
            else:
                out += [("--optimization-level", i), (level, i)]
        elif era and arg == "-O" and i + 1 < len(args) and args[i + 1] in _O_LEVELS:
            out.append(("-O.level" if era == 1 else "--optimization-level", i))
        else:
            out.append((arg, i))
    return out


def normalize(token: str, version: Version | None = None) -> str:
    """``token`` as vLLM's ``FlexibleArgumentParser`` rewrites it before argparse sees it, as
    one token argparse reads the same way: ``--gpu_memory_utilization=0.5`` ->
    ``--gpu-memory-utilization=0.5``, ``--compilation_config.cudagraph_mode`` ->
    ``--compilation-config.cudagraph_mode``, ``-O3`` -> ``--optimization-level=3`` (0.13.0+) or
    ``-O.level=3`` (0.9.2-0.11.0). ``version`` defaults to the newest table version."""
    row = table_row(version) if version is not None else _table().rows[-1]
    rewritten = [t for t, _ in _rewrite([token], row)]
    return "=".join(rewritten) if len(rewritten) == 2 else rewritten[0]


# --- argparse ----------------------------------------------------------------------------------


@dataclass
class _Opt:
    """A token argparse reads as an option."""

    spec: FlagSpec | None
    option: str  # the option string matched (or the token when unknown)
    explicit: str | None
    abbreviated: bool = False
    ambiguous: tuple[str, ...] = ()


def _classify(token: str, options: dict[str, FlagSpec]) -> _Opt | None:
    """argparse's ``_parse_optional`` (Python 3.11); None: a positional/value."""
    if not token or token[0] != "-":
        return None
    if token in options:
        return _Opt(options[token], token, None)
    if len(token) == 1:
        return None
    if "=" in token:
        name, _, explicit = token.partition("=")
        if name in options:
            return _Opt(options[name], name, explicit)
    matches: list[tuple[str, str | None]] = []
    if token[1] == "-":  # allow_abbrev: unique prefixes of long options
        prefix, eq, explicit = token.partition("=")
        matches = [(s, explicit if eq else None) for s in options if s.startswith(prefix)]
    else:  # -qfp8 (attached value) or -t (prefix of -tp)
        for s in options:
            if s == token[:2]:
                matches.append((s, token[2:]))
            elif s.startswith(token):
                matches.append((s, None))
    if len(matches) > 1:
        return _Opt(None, token, None, ambiguous=tuple(s for s, _ in matches))
    if len(matches) == 1:
        s, attached = matches[0]
        return _Opt(options[s], s, attached, abbreviated=not token.startswith(s))
    if _NEGATIVE_NUMBER.match(token):  # no serve option looks like a negative number
        return None
    if " " in token:
        return None
    return _Opt(None, token, None)


def _unknown(name: str, row: str, version: Version) -> str:
    rows = _table().rows
    msg = f"unknown flag {name} for vLLM {version}"
    if _row_version(row) != version:
        msg += f" (checked against vLLM {row}'s parser, the nearest older table version)"
    base = name.split("=", 1)[0]
    history = flag_history(base)
    i = rows.index(row)
    later = [a for a, _ in history if rows.index(a) > i]
    earlier = [b for _, b in history if rows.index(b) < i]
    if earlier:
        last = earlier[-1]
        gone = rows[rows.index(last) + 1]
        msg += f"; removed: last in vLLM {last}, absent from {gone}"
    if later:
        first = later[0]
        before = rows[rows.index(first) - 1]
        msg += f"; exists from vLLM {first} (absent from {before})"
    negated = base.startswith("--no-")
    candidates = [
        o
        for o, spec in _row_options(row).items()
        if o.startswith("--") == base.startswith("--") and (o in spec.negations) == negated
    ]
    close = difflib.get_close_matches(base, candidates, n=3, cutoff=0.6)
    if close:
        msg += f"; did you mean {', '.join(close)}?"
    return msg


def _some(names: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _expected(nargs: Nargs) -> str:
    if nargs == "+":
        return "at least one value"
    if isinstance(nargs, int) and nargs > 1:
        return f"{nargs} values"
    return "a value"


def parse_serve_args(args: Sequence[str], version: Version) -> ParsedArgs:
    """Parse ``args`` (the flags after ``vllm serve MODEL``) as vLLM ``version`` would.

    Every problem is reported (vLLM stops at the first): unknown or ambiguous flags, bare
    tokens that are no flag's value, flags without their value, values for flags that take none,
    values outside ``choices``."""
    row = table_row(version)
    era = _era(row)
    options = _row_options(row)
    problems: list[str] = []
    items: list[FlagUse] = []
    args = [str(a) for a in args]

    if era < 2 and "--model" in args:
        problems.append(
            f"vLLM {version} refuses --model after `vllm serve` (ValueError): the model is the "
            "positional argument"
        )
    elif era == 2 and any(re.match(r"^--model(=.+|$)", a) for a in args):
        problems.append(
            f"vLLM {version} moves the value of --model to the positional model, so the model "
            "before the flags becomes an unrecognized argument: drop --model"
        )

    tokens = _rewrite(args, row)

    # dotted JSON keys: FlexibleArgumentParser turns them into `--key '{json}'` pairs
    dotted: list[tuple[str, str, str | None, tuple[int, ...]]] = []  # key, subkey, value, idx
    kept: list[tuple[str, int]] = []
    skip = -1
    for j, (tok, i) in enumerate(tokens):
        if j == skip:
            continue
        # 0.13.0+ first skips `--name` without a '.'; the rule below skips it as well
        if not (era > 0 and tok.startswith("-") and "." in tok):
            kept.append((tok, i))
            continue
        value: str | None
        if "=" in tok:
            name, _, value = tok.partition("=")
            if "." not in name:  # the '.' was only in the value
                kept.append((tok, i))
                continue
            idx: tuple[int, ...] = (i,)
        else:
            name = tok
            if j + 1 < len(tokens):
                value, nxt = tokens[j + 1]
                skip = j + 1
                idx = tuple(dict.fromkeys((i, nxt)))
            else:
                value, idx = None, (i,)
        key, _, subkey = name.removesuffix("+").partition(".")
        dotted.append((key, subkey, value, idx))

    def use(spec: FlagSpec, values: list[str], idx: list[int], opt: _Opt, **kw: Any) -> None:
        spelling = args[idx[0]].split("=", 1)[0]
        items.append(
            FlagUse(
                flag=spec.flag,
                values=tuple(values),
                indices=tuple(dict.fromkeys(idx)),
                spelling=spelling,
                negated=opt.option in spec.negations,
                abbreviated=opt.abbreviated,
                **kw,
            )
        )
        if spec.choices is not None and spec.nargs != 0:
            for val in values:
                if val not in spec.choices:
                    problems.append(
                        f"{spec.flag}: invalid choice {val!r} for vLLM {version} "
                        f"(choose from {', '.join(spec.choices)})"
                    )

    # argparse
    classified: list[_Opt | None] = []
    after_dashes = False
    for tok, _ in kept:
        if after_dashes:
            classified.append(None)
        elif tok == "--":
            after_dashes = True
            classified.append(None)
        else:
            classified.append(_classify(tok, options))

    def values_after(j: int) -> list[tuple[str, int]]:
        """The tokens from ``j`` on that argparse reads as values (up to the next option)."""
        out = []
        while j < len(kept) and classified[j] is None and kept[j][0] != "--":
            out.append(kept[j])
            j += 1
        return out

    j = 0
    prev: FlagSpec | None = None  # the flag just before, for hints
    while j < len(kept):
        tok, i = kept[j]
        opt = classified[j]
        j += 1
        if tok == "--" and opt is None:
            rest = [t for t, _ in kept[j:]]
            if rest:
                problems.append(f"'--' ends the flags: {' '.join(rest)} would be positional")
            break
        if opt is None:
            hint = f" ({prev.flag} takes no value)" if prev is not None and prev.nargs == 0 else ""
            problems.append(f"bare token {tok!r} is not the value of any flag{hint}")
            prev = None
            continue
        if opt.spec is None:
            following = values_after(j)
            j += len(following)
            prev = None
            if opt.ambiguous:
                problems.append(f"ambiguous flag {tok}: could match {_some(opt.ambiguous)}")
                continue
            name = tok.split("=", 1)[0]
            msg = _unknown(name, row, version)
            if re.match(r"^-\d", name):
                msg += "; a value that starts with '-' must be attached to its flag: --flag=VALUE"
            if following:
                msg += f" (with {' '.join(t for t, _ in following)})"
            problems.append(msg)
            continue
        # argparse's consume_optional
        spec, explicit = opt.spec, opt.explicit
        while explicit and spec.nargs == 0 and opt.option[1] != "-":
            # -hq...: single-dash flags run together; the next one may take the rest as value
            use(spec, [], [i], opt)
            short = "-" + explicit[0]
            if short not in options:
                break
            opt = _Opt(options[short], short, explicit[1:] or None)
            spec, explicit = options[short], opt.explicit
        if explicit is not None:
            if spec.nargs == 0:
                problems.append(f"{spec.flag} takes no value (got {tok!r})")
                if opt.option[1] == "-":
                    use(spec, [], [i], opt)
            elif spec.nargs in (1, "?", "*", "+"):
                use(spec, [explicit], [i], opt)
            else:
                problems.append(f"{spec.flag} needs {_expected(spec.nargs)}, got {tok!r}")
            prev = spec
            continue
        following = values_after(j)
        nargs = spec.nargs
        if nargs in ("*", "+"):
            take = len(following)
        elif nargs == "?":
            take = min(1, len(following))
        else:
            take = int(nargs)
        if take > len(following) or (nargs == "+" and not following):
            if i + 1 < len(args) and all(k != i + 1 for _, k in kept):
                after = f"vLLM's dotted-key rule takes the next token {args[i + 1]!r}"
            elif j < len(kept):
                after = f"the next token {kept[j][0]!r} is read as a flag"
            else:
                after = "it is the last token"
            problems.append(f"{spec.flag} needs {_expected(nargs)}; {after}")
            take = 0
        chosen = following[:take]
        use(spec, [t for t, _ in chosen], [i, *(k for _, k in chosen)], opt)
        j += take
        prev = spec

    # the dotted keys, appended by vLLM after everything else
    for key, subkey, value, idx in dotted:
        written = args[idx[0]].split("=", 1)[0]
        if re.match(r"^-\d+$", key):
            problems.append(
                f"{args[idx[0]]!r} starts with '-' and has a '.': vLLM {version} reads it as the "
                f"option {key} with the JSON key {subkey!r} and takes the next token as its value; attach "
                "a negative decimal to its flag: --flag=-0.5"
            )
            continue
        if value is None:
            problems.append(f"{written} needs a value (vLLM fails with an IndexError)")
            continue
        opt = _classify(key, options)
        if opt is None or opt.spec is None:
            if opt is not None and opt.ambiguous:
                problems.append(f"ambiguous flag {written}: could match {_some(opt.ambiguous)}")
            else:
                problems.append(_unknown(written.partition(".")[0], row, version))
            continue
        if opt.spec.nargs == 0:
            problems.append(f"{opt.spec.flag} takes no value, so it has no JSON keys ({written})")
            continue
        items.append(
            FlagUse(
                flag=opt.spec.flag,
                values=(value,),
                indices=idx,
                spelling=written,
                subkey=subkey,
                abbreviated=opt.abbreviated,
            )
        )
    return ParsedArgs(version, row, tuple(items), tuple(problems))
