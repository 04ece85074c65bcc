//! Turning a core WebAssembly module into a component.
//!
//! wit-bindgen embeds the plugin's component type in a custom section of the
//! core module; wit-component reads it and wraps the module. A module built
//! for WASI preview 1 (`wasm32-wasip1`) also gets wasmtime's preview1
//! adapter, which implements those imports on WASI preview 2.

use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_component::ComponentEncoder;

/// A component from `bytes`: components pass through unchanged, core
/// modules are wrapped. The error says what is wrong with the bytes.
pub fn componentize(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if wasmparser::Parser::is_component(bytes) {
        return Ok(bytes.to_vec());
    }
    if !wasmparser::Parser::is_core_wasm(bytes) {
        return Err("not WebAssembly (no wasm magic number)".into());
    }
    let mut encoder = ComponentEncoder::default()
        .validate(true)
        .module(bytes)
        .map_err(|e| format!("the module carries no usable component type (build it with duckgate-guest / wit-bindgen): {e:#}"))?;
    if imports_preview1(bytes) {
        encoder = encoder
            .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
            .map_err(|e| format!("cannot add the WASI adapter: {e:#}"))?;
    }
    encoder.encode().map_err(|e| format!("cannot make a component of the module: {e:#}"))
}

fn imports_preview1(bytes: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(bytes).any(|payload| match payload {
        Ok(wasmparser::Payload::ImportSection(reader)) => reader
            .into_imports()
            .flatten()
            .any(|import| import.module == WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_wasm() {
        assert!(componentize(b"hello").unwrap_err().contains("not WebAssembly"));
        // A component passes through untouched.
        let component = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        assert_eq!(componentize(&component).unwrap(), component);
    }
}
