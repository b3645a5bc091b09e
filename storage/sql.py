"""PostgreSQL-style SQL made to run on SQLite: the domain's queries are written once.

Two things are translated, both only outside string literals, quoted identifiers and comments:
- `$n` placeholders become `?n` (SQLite numbers parameters the same way, so a reused `$1`
  and any order still bind correctly);
- row-lock clauses (`FOR UPDATE`, `FOR SHARE`, with `NOWAIT` or `SKIP LOCKED`) are dropped:
  on SQLite a transaction already holds the whole database's write lock (BEGIN IMMEDIATE).

Not translated, so not portable: `::type` casts (write `CAST(x AS type)`), `E'...'` strings,
`$$` quoting, GREATEST/LEAST and ILIKE.
"""

from __future__ import annotations

import re
import sqlite3
from functools import lru_cache

_TOKENS = re.compile(
    r"""
      '(?:[^']|'')*'                      # string literal
    | "(?:[^"]|"")*"                      # quoted identifier
    | --[^\n]*                            # line comment
    | /\*.*?\*/                           # block comment
    | (?<![\w$])\$(?P<param>\d+)          # placeholder
    | (?P<lock>\s+FOR\s+(?:UPDATE|SHARE)(?:\s+NOWAIT|\s+SKIP\s+LOCKED)?\b)
    """,
    re.VERBOSE | re.DOTALL | re.IGNORECASE,
)


def _replace(match: re.Match[str]) -> str:
    if match["param"]:
        return "?" + match["param"]
    if match["lock"]:
        return ""
    return match[0]


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """PostgreSQL-style `sql` as SQLite runs it (cached: the domain's SQL is mostly constant)."""
    return _TOKENS.sub(_replace, sql)


def split_script(script: str) -> list[str]:
    """A migration's statements, split where SQLite's own tokenizer says one ends.

    Unlike splitting on `;`, this keeps semicolons inside literals, comments and
    CREATE TRIGGER bodies where they belong.
    """
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())  # a last statement without its `;`
    return statements
