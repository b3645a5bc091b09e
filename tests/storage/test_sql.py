"""PostgreSQL-style SQL as SQLite runs it, and migration scripts split into statements."""

from __future__ import annotations

import pytest

from storage.sql import split_script, translate


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT $1, $2, $1", "SELECT ?1, ?2, ?1"),
        ("SELECT $10 + $1", "SELECT ?10 + ?1"),
        ("SELECT '$1', 'it''s $2', $3", "SELECT '$1', 'it''s $2', ?3"),
        ('SELECT "a$1" FROM t WHERE x = $1', 'SELECT "a$1" FROM t WHERE x = ?1'),
        ("SELECT $1 -- not $2\n, /* nor $3 */ $4", "SELECT ?1 -- not $2\n, /* nor $3 */ ?4"),
        ("SELECT x FROM t WHERE id = $1 FOR UPDATE", "SELECT x FROM t WHERE id = ?1"),
        ("SELECT x FROM t\n  for update skip locked LIMIT 1", "SELECT x FROM t LIMIT 1"),
        ("SELECT x FROM t FOR SHARE NOWAIT", "SELECT x FROM t"),
        ("SELECT 'FOR UPDATE' AS s", "SELECT 'FOR UPDATE' AS s"),
        ("SELECT $$", "SELECT $$"),
    ],
)
def test_translate_touches_only_placeholders_and_row_locks_outside_literals(sql, expected):
    assert translate(sql) == expected


def test_split_script_ends_statements_where_sqlite_does():
    script = """-- a comment; with a semicolon
CREATE TABLE t (x TEXT DEFAULT 'a;
b');
INSERT INTO t VALUES ('1;'); -- trailing note
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
    UPDATE t SET x = x || ';';
END;
SELECT 1"""
    statements = split_script(script)
    assert len(statements) == 4
    assert statements[0].endswith("b');")
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")
    assert statements[3] == "SELECT 1"


def test_split_script_of_nothing_is_nothing():
    assert split_script("\n  \n") == []
