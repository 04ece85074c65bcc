//! Reading request bodies by hand, so every error names the exact field
//! (`tables[0].s3_path must be a non-empty string`) the way the Node sidecar's
//! clients already expect, instead of serde's generic messages.

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::BytesMut;
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::error::Error;

/// A path to a field in the request body, for error messages.
#[derive(Clone, Debug)]
pub struct Field(String);

impl Field {
    pub fn new(name: &str) -> Self {
        Field(name.to_string())
    }

    pub fn child(&self, name: &str) -> Self {
        Field(format!("{}.{name}", self.0))
    }

    pub fn index(&self, i: usize) -> Self {
        Field(format!("{}[{i}]", self.0))
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    fn leaf(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or(&self.0)
    }

    pub fn object<'a>(&self, v: &'a Value) -> Result<&'a Map<String, Value>, Error> {
        v.as_object()
            .ok_or_else(|| Error::invalid(format!("{} must be an object", self.0)))
    }

    pub fn array<'a>(&self, v: Option<&'a Value>) -> Result<&'a Vec<Value>, Error> {
        v.and_then(Value::as_array)
            .ok_or_else(|| Error::invalid(format!("{} must be an array", self.0)))
    }

    /// `obj[leaf]` as a non-empty string.
    pub fn required_str<'a>(&self, obj: &'a Map<String, Value>) -> Result<&'a str, Error> {
        match obj.get(self.leaf()) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            _ => Err(Error::invalid(format!("{} must be a non-empty string", self.0))),
        }
    }

    pub fn optional_str<'a>(&self, obj: &'a Map<String, Value>) -> Result<Option<&'a str>, Error> {
        match obj.get(self.leaf()) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::invalid(format!("{} must be a string", self.0))),
        }
    }

    pub fn optional_bool(&self, obj: &Map<String, Value>) -> Result<Option<bool>, Error> {
        match obj.get(self.leaf()) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Error::invalid(format!("{} must be a boolean", self.0))),
        }
    }

    pub fn optional_u64(&self, obj: &Map<String, Value>) -> Result<Option<u64>, Error> {
        match obj.get(self.leaf()) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::invalid(format!("{} must be a non-negative integer", self.0))),
        }
    }
}

/// The body of a request, with axum's rejections turned into our errors
/// (413 as JSON, not axum's plain text).
pub fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Error> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge { limit }
        } else {
            Error::invalid(format!("could not read the request body: {rejection}"))
        }
    })
}

/// Reads a large body (`/snapshot`) into one buffer sized from
/// Content-Length, mapped straight from the OS. axum's `Bytes` extractor
/// gathers the chunks and copies them into one buffer, holding the body
/// twice; and a heap buffer this size, once freed, stays in a glibc arena
/// (glibc raises its mmap threshold to it), so RSS grew by about a body per
/// snapshot on a new thread. A mapping is returned to the OS when dropped.
pub async fn sized_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    let mut chunks = body.into_data_stream();
    let read_error = |e: axum::Error| Error::invalid(format!("could not read the request body: {e}"));
    match declared {
        Some(len) if len > 0 => {
            let mut mapped = memmap2::MmapMut::map_anon(len).map_err(Error::internal)?;
            let mut filled = 0;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(read_error)?;
                // hyper holds the body to its Content-Length; this is a guard.
                let Some(space) = mapped.get_mut(filled..filled + chunk.len()) else {
                    return Err(Error::invalid("the request body is longer than its Content-Length"));
                };
                space.copy_from_slice(&chunk);
                filled += chunk.len();
            }
            let mapped = mapped.make_read_only().map_err(Error::internal)?;
            Ok(Bytes::from_owner(mapped).slice(..filled))
        }
        _ => {
            let mut buffer = BytesMut::new();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(read_error)?;
                if buffer.len() + chunk.len() > limit {
                    return Err(Error::PayloadTooLarge { limit });
                }
                buffer.extend_from_slice(&chunk);
            }
            Ok(buffer.freeze())
        }
    }
}

/// Parses a body that must be a JSON object.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid("request body must be a JSON object")),
        Err(_) => Err(Error::InvalidJson),
    }
}
