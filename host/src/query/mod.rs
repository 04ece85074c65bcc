//! `POST /query`: the caller's SQL over Parquet objects, in a locked-down
//! DuckDB: a fresh instance per request by default, or a shared instance per
//! exact table set (`DUCKGATE_QUERY_INSTANCES=shared`, see [`shared`]).
//!
//! Flow: validate; admission (N running, M queued, else 503); resolve each
//! table's key or glob (HEAD or LIST); bring every object into the local
//! cache; then on blocking threads take an instance, create one view per
//! table and lock it down (fresh) or connect (shared), check the SQL is one
//! read statement, run it and encode the JSON. The whole request runs under
//! SIDECAR_QUERY_TIMEOUT_MS; past it DuckDB is interrupted (the work stops,
//! not only the response) and the answer is 504.

pub mod json;
pub mod sandbox;
pub mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use duckdb::Connection;
use serde_json::Value;

use crate::cancel::{Cancel, CancelOnDrop};
use crate::error::Error;
use crate::object_cache::LocalObject;
use crate::objects::{s3_config_field, S3Config};
use crate::request::{self, Field};
use crate::server::AppState;
use crate::statement::{Refusal, Verdicts};
use sandbox::{Sandbox, Sandboxes, TableSet};
use shared::SharedInstance;

pub struct QueryRequest {
    pub sql: String,
    pub tables: Vec<TableRef>,
    pub s3_config: Option<S3Config>,
}

pub struct TableRef {
    pub name: String,
    pub s3_path: String,
}

impl QueryRequest {
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let obj = request::json_object(body)?;
        let sql = Field::new("sql").required_str(&obj)?.to_string();
        let tables_field = Field::new("tables");
        let tables = match obj.get("tables") {
            None | Some(Value::Null) => Vec::new(),
            other => tables_field
                .array(other)?
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let at = tables_field.index(i);
                    let t = at.object(t)?;
                    Ok(TableRef {
                        name: at.child("name").required_str(t)?.to_string(),
                        s3_path: at.child("s3_path").required_str(t)?.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?,
        };
        Ok(QueryRequest { sql, tables, s3_config: s3_config_field(&obj)? })
    }
}

pub async fn run(state: &AppState, body: &[u8]) -> Result<Vec<u8>, Error> {
    let started = Instant::now();
    let req = QueryRequest::parse(body)?;
    let bucket = state.stores.bucket_for(req.s3_config.as_ref())?;
    // The permit moves into the DuckDB task below, so "running" on the stats
    // routes counts real DuckDB work, including work that is being interrupted.
    let admitted = state.queries.admit().await.map_err(|full| Error::Busy {
        message: format!(
            "sidecar is busy (queue full: {}/{}); retry shortly. Please retry in a few seconds.",
            full.queued, full.max_queue
        ),
        extra: Default::default(),
    })?;
    let timeout = state.config.query_timeout();
    let deadline = started + timeout;
    let timed_out = || {
        Error::Timeout(format!(
            "query exceeded SIDECAR_QUERY_TIMEOUT_MS ({} ms) and was cancelled",
            timeout.as_millis()
        ))
    };

    // Objects: resolve keys and globs, then make each a local file.
    let fetch = async {
        let mut held: Vec<Arc<LocalObject>> = Vec::new();
        let mut set = TableSet::default();
        for (i, table) in req.tables.iter().enumerate() {
            let field = format!("tables[{i}].s3_path");
            let metas = bucket.resolve(&field, &table.s3_path).await?;
            let mut locals = Vec::with_capacity(metas.len());
            for meta in &metas {
                locals.push(state.object_cache.get(&bucket, meta).await?);
            }
            set.push(&table.name, &metas, &locals);
            held.extend(locals);
        }
        Ok::<_, Error>((held, set))
    };
    let (held, set) = tokio::time::timeout_at(deadline.into(), fetch)
        .await
        .map_err(|_| timed_out())??;
    let fetched = started.elapsed();

    // An instance (opening or building one is blocking work). The permit
    // goes along: past the deadline, a build still running keeps its slot.
    let opening = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || (Session::open(&state, held, set), admitted))
    };
    let (session, admitted) = tokio::time::timeout_at(deadline.into(), opening)
        .await
        .map_err(|_| timed_out())?
        .map_err(Error::internal)?;
    let session = session?;

    let cancel = Cancel::new(session.conn());
    let mut guard = CancelOnDrop::new(cancel.clone());
    let work_cancel = cancel.clone();
    let sql = req.sql;
    let max_bytes = state.config.max_result_size.as_u64() as usize;
    let verdicts = state.verdicts.clone();
    let mut work = tokio::task::spawn_blocking(move || {
        let result = execute(&session, &sql, &verdicts, max_bytes, &work_cancel);
        drop(admitted);
        session.close();
        result
    });
    let result = match tokio::time::timeout_at(deadline.into(), &mut work).await {
        Ok(joined) => {
            guard.disarm();
            joined?
        }
        Err(_) => {
            guard.disarm();
            // Wait (bounded) for DuckDB to stop, so the work has really ended.
            let stopped = cancel.stop(&mut work, Duration::from_secs(5)).await;
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, stopped, "query timed out and was interrupted");
            return Err(timed_out());
        }
    };
    let (body, rows) = result?;
    tracing::info!(
        rows,
        objects_ms = fetched.as_secs_f64() * 1000.0,
        total_ms = started.elapsed().as_secs_f64() * 1000.0,
        "query served"
    );
    Ok(body)
}

/// Where one request's statement runs.
enum Session {
    /// A never-used instance; `execute` creates the request's views in it.
    Fresh { sandbox: Sandbox, tables: TableSet, objects: Vec<Arc<LocalObject>>, sandboxes: Sandboxes },
    /// A new connection to a shared instance that has the views already.
    Shared { conn: Connection, _instance: Arc<SharedInstance> },
}

impl Session {
    fn open(state: &AppState, objects: Vec<Arc<LocalObject>>, tables: TableSet) -> Result<Session, Error> {
        match &state.shared {
            Some(shared) => {
                let (conn, instance) = shared.connect(&tables, objects)?;
                Ok(Session::Shared { conn, _instance: instance })
            }
            None => {
                let sandbox = state.sandboxes.take().map_err(|e| Error::internal(format!("cannot open DuckDB: {e}")))?;
                Ok(Session::Fresh { sandbox, tables, objects, sandboxes: state.sandboxes.clone() })
            }
        }
    }

    fn conn(&self) -> &Connection {
        match self {
            Session::Fresh { sandbox, .. } => sandbox.conn(),
            Session::Shared { conn, .. } => conn,
        }
    }

    /// Ends the session: a fresh instance is closed in the background, and
    /// only then are its files released.
    fn close(self) {
        if let Session::Fresh { sandbox, objects, sandboxes, .. } = self {
            sandboxes.retire(sandbox, objects);
        }
    }
}

/// A failure to create a request's views: the tables' data is unreadable.
fn tables_error(err: duckdb::Error) -> Error {
    match sql_error(err) {
        Error::Sql(m) => Error::Sql(format!("cannot read the tables' Parquet data: {m}")),
        other => other,
    }
}

/// Runs on a blocking thread: views and lock-down (fresh instances), the
/// check, the query, JSON.
fn execute(session: &Session, sql: &str, verdicts: &Verdicts, max_bytes: usize, cancel: &Cancel) -> Result<(Vec<u8>, usize), Error> {
    let go_on = || if cancel.is_cancelled() { Err(Error::Timeout("query cancelled".into())) } else { Ok(()) };
    let conn = session.conn();
    go_on()?;
    if let Session::Fresh { tables, .. } = session {
        sandbox::prepare(conn, tables).map_err(tables_error)?;
        go_on()?;
    }
    verdicts.check(conn, sql).map_err(|r| match r {
        Refusal::Syntax(m) => Error::Sql(m),
        other => Error::Sql(other.to_string()),
    })?;
    go_on()?;
    let mut stmt = conn.prepare(sql).map_err(sql_error)?;
    go_on()?;
    let stream = stmt.stream_arrow([]).map_err(sql_error)?;
    let schema = stream.get_schema();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    // Encoded batch by batch: a runaway result stops at the bound instead of
    // being held in memory whole.
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    let mut writer = json::RowWriter::start(&mut out, &columns);
    for batch in stream {
        go_on()?;
        writer.write_batch(&mut out, &batch.map_err(sql_error)?);
        if out.len() > max_bytes {
            return Err(Error::Invalid(format!(
                "the result is larger than {max_bytes} bytes (DUCKGATE_MAX_RESULT_SIZE); add a LIMIT or aggregate"
            )));
        }
    }
    let rows = writer.finish(&mut out);
    out.extend_from_slice(format!(",\"row_count\":{rows}}}").as_bytes());
    Ok((out, rows))
}

/// DuckDB errors caused by the statement are the caller's (400); resource
/// and internal failures are ours (500).
pub fn sql_error(err: duckdb::Error) -> Error {
    let text = err.to_string();
    // An "IO Error" here is a path the caller named (the objects themselves
    // were fetched and checked before DuckDB ran): the caller's to fix.
    let ours = ["Out of Memory Error", "Internal Error", "FATAL Error"];
    if ours.iter().any(|kind| text.starts_with(kind)) {
        Error::Internal(text)
    } else {
        Error::Sql(text)
    }
}
