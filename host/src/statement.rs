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
//! This is one of three layers: the connection a statement then runs on also
//! has external access off (no file but those a request was given) and its
//! configuration locked.

use duckdb::Connection;
use serde::Deserialize;

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
    #[error("the function {0}() changes the database and is refused")]
    Function(String),
}

/// Functions that parse as part of a read but act on the database file.
/// (Writes through functions such as `nextval` are stopped by the READ ONLY
/// transaction live reads run in.)
const REFUSED_FUNCTIONS: &[&str] = &["checkpoint", "force_checkpoint"];

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

#[derive(Deserialize)]
struct Serialized {
    error: bool,
    #[serde(default)]
    error_type: String,
    #[serde(default)]
    error_message: String,
    #[serde(default)]
    statements: Vec<serde::de::IgnoredAny>,
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
    let parsed: Serialized =
        serde_json::from_str(&serialized).map_err(|e| Refusal::Syntax(e.to_string()))?;
    if parsed.error {
        return Err(match parsed.error_type.as_str() {
            "not implemented" => Refusal::NotARead,
            _ => Refusal::Syntax(parsed.error_message),
        });
    }
    match parsed.statements.len() {
        0 => return Err(Refusal::Empty),
        1 => {}
        n => return Err(Refusal::Multiple(n)),
    }
    let tree: serde_json::Value = serde_json::from_str(&serialized).map_err(|e| Refusal::Syntax(e.to_string()))?;
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
