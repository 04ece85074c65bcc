//! Deciding whether a caller's SQL may run: exactly one statement, and a read.
//!
//! DuckDB's own parser decides, through `json_serialize_sql`, which parses
//! the text without binding or running it and serializes only SELECT-type
//! statements (SELECT, FROM-first, VALUES, set operations, PIVOT, DESCRIBE,
//! SUMMARIZE). Every other kind, COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA,
//! EXPORT, CALL and all DML and DDL, comes back as an error, and so does a
//! second statement, before anything runs. This matters because
//! `duckdb::Connection::prepare` executes every statement but the last.
//!
//! A read can still call a function that acts: `nextval`, `checkpoint()`,
//! `add_parquet_key`, the external-resource functions, `write_log`. And
//! `query()` or `json_execute_serialized_sql` run SQL given as text, which
//! no check of the statement can see. The serialized tree names every
//! function called, so those are refused too. Every other function of this
//! DuckDB is listed in `reviewed-functions.txt`, and a unit test fails on
//! any in neither list, so an upgrade cannot slip a new one past review.
//!
//! The connection a statement then runs on also has external access off (no
//! file but those a request was given) and its configuration locked.

use duckdb::Connection;

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("SQL is empty; send one SELECT statement")]
    Empty,
    #[error("SQL must be exactly one statement, got {0}; send one SELECT statement")]
    Multiple(usize),
    #[error("only read statements (SELECT, WITH, VALUES, DESCRIBE, ...) are allowed; COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA, EXPORT and writes are refused")]
    NotARead,
    #[error("{0}")]
    Syntax(String),
    #[error("the function {0}() is refused here: it changes state or runs SQL given as text")]
    Function(String),
}

/// Functions a caller's read may not call: they change the database or
/// the instance (sequences, checkpoints, keys, external resources, logging,
/// the random seed), read memory or other callers' statements, or run SQL
/// given as text, which this check cannot see.
pub const REFUSED_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "setseed",
    "write_log",
    "checkpoint",
    "force_checkpoint",
    "add_parquet_key",
    "create_external_resource",
    "destroy_external_resource",
    "register_external_resource",
    "deregister_external_resource",
    "register_external_resource_type",
    "truncate_duckdb_logs",
    "enable_logging",
    "disable_logging",
    "enable_profiling",
    "disable_profiling",
    // Scan memory at addresses passed as arguments.
    "arrow_scan",
    "arrow_scan_dumb",
    // Lists the SQL other callers prepared on a pooled connection.
    "duckdb_prepared_statements",
    "query",
    "json_execute_serialized_sql",
    // Binds (and plans) SQL given as text.
    "json_serialize_plan",
    // Holds a thread in a way an interrupt may not stop.
    "sleep_ms",
];

/// Finds a refused function anywhere in the serialized statement.
fn refused_function(node: &serde_json::Value) -> Option<String> {
    match node {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(name)) = map.get("function_name") {
                if REFUSED_FUNCTIONS.contains(&name.to_ascii_lowercase().as_str()) {
                    return Some(name.clone());
                }
            }
            map.values().find_map(refused_function)
        }
        serde_json::Value::Array(items) => items.iter().find_map(refused_function),
        _ => None,
    }
}

/// Verdicts of [`check_read_only`] by SQL text. A verdict depends on the
/// text alone, so a dashboard, client or plugin repeating one statement
/// (with new parameters) is parsed and checked once.
#[derive(Clone)]
pub struct Verdicts {
    known: moka::sync::Cache<String, Result<(), Refusal>>,
}

impl Verdicts {
    pub fn new(entries: u64) -> Self {
        Verdicts { known: moka::sync::Cache::new(entries) }
    }

    /// The cached verdict on `sql`, or a fresh check on `conn`.
    pub fn check(&self, conn: &Connection, sql: &str) -> Result<(), Refusal> {
        if let Some(known) = self.known.get(sql) {
            return known;
        }
        let verdict = check_read_only(conn, sql);
        self.known.insert(sql.to_string(), verdict.clone());
        verdict
    }
}

/// Checks `sql` with DuckDB's parser on `conn` (any connection with the json
/// extension; nothing is bound or executed).
pub fn check_read_only(conn: &Connection, sql: &str) -> Result<(), Refusal> {
    if sql.trim().trim_matches(';').trim().is_empty() {
        return Err(Refusal::Empty);
    }
    let serialized: String = conn
        .query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |row| row.get(0))
        .map_err(|e| Refusal::Syntax(e.to_string()))?;
    let tree: serde_json::Value = serde_json::from_str(&serialized).map_err(|e| Refusal::Syntax(e.to_string()))?;
    if tree["error"].as_bool().unwrap_or(false) {
        return Err(match tree["error_type"].as_str() {
            Some("not implemented") => Refusal::NotARead,
            _ => Refusal::Syntax(tree["error_message"].as_str().unwrap_or_default().to_string()),
        });
    }
    match tree["statements"].as_array().map_or(0, Vec::len) {
        0 => return Err(Refusal::Empty),
        1 => {}
        n => return Err(Refusal::Multiple(n)),
    }
    match refused_function(&tree) {
        Some(name) => Err(Refusal::Function(name)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str) -> Result<(), Refusal> {
        let conn = Connection::open_in_memory().unwrap();
        check_read_only(&conn, sql)
    }

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT 1",
            "select 1;",
            "WITH t AS (SELECT 1 AS a) SELECT a FROM t",
            "FROM range(3)",
            "VALUES (1), (2)",
            "SELECT 1 UNION ALL SELECT 2",
            "SELECT quantile_cont(x, 0.99) FROM range(10) t(x)",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
    }

    /// Fails when this DuckDB has a function nobody has reviewed: it may act,
    /// and would then belong in REFUSED_FUNCTIONS.
    #[test]
    fn every_function_has_been_reviewed() {
        let reviewed: Vec<&str> = include_str!("reviewed-functions.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare("SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type <> 'pragma'")
            .unwrap();
        let names: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert!(names.len() > 500, "duckdb_functions() listed too few: {}", names.len());
        let unreviewed: Vec<&String> = names
            .iter()
            .filter(|n| !reviewed.contains(&n.as_str()) && !REFUSED_FUNCTIONS.contains(&n.as_str()))
            .collect();
        assert!(
            unreviewed.is_empty(),
            "review these functions and add each to reviewed-functions.txt or REFUSED_FUNCTIONS: {unreviewed:?}"
        );
        let refused_and_reviewed: Vec<&&str> = REFUSED_FUNCTIONS.iter().filter(|n| reviewed.contains(n)).collect();
        assert!(refused_and_reviewed.is_empty(), "in both lists: {refused_and_reviewed:?}");
    }

    #[test]
    fn functions_that_act_are_refused_anywhere_in_a_read() {
        for (sql, name) in [
            ("SELECT nextval('events_id_seq')", "nextval"),
            ("SELECT * FROM range(3) WHERE range > setval('s', 5)", "setval"),
            ("SELECT * FROM query('SELECT nextval(''s'')')", "query"),
            ("SELECT * FROM json_execute_serialized_sql('{}')", "json_execute_serialized_sql"),
            ("WITH a AS (SELECT * FROM add_parquet_key('k', 'v')) SELECT * FROM a", "add_parquet_key"),
            ("SELECT * FROM arrow_scan(1, 2, 3)", "arrow_scan"),
            ("SELECT [x FOR x IN [1] IF write_log('x') IS NULL]", "write_log"),
            ("SELECT main.NEXTVAL('s')", "nextval"),
            ("SELECT \"NextVal\"('s')", "nextval"),
            ("SELECT count(*) OVER (ORDER BY setseed(0.5))", "setseed"),
            ("SELECT * FROM t AT (VERSION => nextval('s'))", "nextval"),
            ("SELECT * FROM t AT (TIMESTAMP => now() - INTERVAL (nextval('s')) SECOND)", "nextval"),
            ("SELECT list(x ORDER BY nextval('s')) FROM range(3) t(x)", "nextval"),
            ("SELECT count(*) FILTER (WHERE nextval('s') > 0) FROM range(3)", "nextval"),
            ("SELECT x FROM range(3) t(x) QUALIFY row_number() OVER () = nextval('s')", "nextval"),
            ("SELECT list_transform([1, 2], lambda x: x + nextval('s'))", "nextval"),
            ("SELECT (1).nextval()", "nextval"),
            ("SELECT COLUMNS(c -> nextval('s') > 0) FROM range(3)", "nextval"),
            ("SELECT json_serialize_plan('SELECT nextval(''s'')')", "json_serialize_plan"),
            ("SELECT sleep_ms(1000) FROM range(2048)", "sleep_ms"),
            ("FROM range(3) SELECT * LIMIT nextval('s')", "nextval"),
            ("SELECT * FROM range(3) ORDER BY nextval('s')", "nextval"),
            ("SELECT * FROM range(3) t(x) JOIN range(3) u(y) ON x = nextval('s')", "nextval"),
        ] {
            assert_eq!(check(sql), Err(Refusal::Function(name.into())), "{sql}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        for sql in [
            "COPY (SELECT 1) TO '/tmp/x'",
            "ATTACH '/tmp/x.db'",
            "INSTALL httpfs",
            "LOAD httpfs",
            "SET threads = 1",
            "PRAGMA version",
            "EXPORT DATABASE '/tmp/x'",
            "CREATE TABLE t (a INT)",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM t",
            "DROP TABLE t",
            "CALL pragma_version()",
            "DETACH x",
            "USE memory",
            "CHECKPOINT",
            "BEGIN",
            "EXPLAIN SELECT 1",
        ] {
            assert_eq!(check(sql), Err(Refusal::NotARead), "{sql}");
        }
        assert_eq!(check("SELECT 1; SELECT 2"), Err(Refusal::Multiple(2)));
        assert_eq!(check("SELECT * FROM checkpoint()"), Err(Refusal::Function("checkpoint".into())));
        assert!(matches!(check("SELECT (SELECT count(*) FROM force_checkpoint())"), Err(Refusal::Function(_))));
        assert_eq!(check("SELECT 1; DROP TABLE t"), Err(Refusal::NotARead));
        assert_eq!(check("  ; "), Err(Refusal::Empty));
        assert!(matches!(check("SELEC 1"), Err(Refusal::Syntax(m)) if m.contains("syntax")));
    }
}
