//! Core modules made components. A handler written in C (or any language whose
//! toolchain emits WASI preview 1 modules) against the world `wasmbatch:handler` comes
//! out of its compiler as a core module: wit-bindgen's bindings put the world in a
//! `component-type` custom section, and the C library imports WASI preview 1.
//! [`component`] wraps such a module into a component of the world, WASI preview 1
//! adapted to preview 2 by the adapter wasmtime publishes with its release. Loading a
//! plugin (`--plugin`, `wasmbatch compile`) does it on the fly; `wasmbatch build`
//! writes the component out.

use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wasmparser::{Parser, Payload};

/// A core module's header: `\0asm`, version 1, layer 0.
const MODULE_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";

/// Whether `bytes` are a core module that carries a component type (a world), as
/// wit-bindgen's bindings for C and other languages leave it: a module to adapt, not
/// an ABI v1 plugin.
pub(crate) fn is_world_module(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&MODULE_HEADER) {
        return false;
    }
    for payload in Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(Payload::CustomSection(section)) if section.name().starts_with("component-type") => return true,
            Ok(_) => {}
            // Not a valid module: compiling it says what is wrong.
            Err(_) => return false,
        }
    }
    false
}

/// The component made of `module` (see [`is_world_module`]): its world from its
/// component type, WASI preview 1 through the reactor adapter. `Err`: why it cannot be
/// made, in words (an import neither WASI nor of its world, a missing export, …).
pub(crate) fn component(module: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .and_then(|encoder| {
            encoder.adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
        })
        .and_then(|mut encoder| encoder.encode())
        .map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module of the world `wasmbatch:handler` as wit-bindgen leaves one: its three
    /// exports under their canonical names and the world in a custom section. `init`
    /// calls WASI preview 1 (`random_get`), which the adapter provides.
    fn world_module(extra_import: &str) -> Vec<u8> {
        let mut resolve = wit_parser::Resolve::default();
        let package =
            resolve.push_str("handler.wit", include_str!("../../guest-sdk/wit/handler.wit")).expect("the world parses");
        let world = resolve.select_world(&[package], Some("handler")).expect("the world is there");
        let wat = format!(
            r#"(module
                (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
                {extra_import}
                (memory (export "memory") 1)
                (global $top (mut i32) (i32.const 1024))
                (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
                    (local $at i32)
                    (local.set $at (global.get $top))
                    (global.set $top (i32.add (global.get $top) (local.get 3)))
                    (local.get $at))
                (func (export "init") (param i32 i32) (result i32)
                    (drop (call $random (i32.const 64) (i32.const 8)))
                    (i32.store8 (i32.const 16) (i32.const 0))
                    (i32.const 16))
                (func (export "handle-batch") (param i32 i32 i32 i32) (result i32)
                    (i32.store8 (i32.const 16) (i32.const 0))
                    (i32.const 16))
                (func (export "on-job-complete") (param i32 i32 i32 i32) (result i32)
                    (i32.store8 (i32.const 16) (i32.const 0))
                    (i32.const 16))
                (func (export "cabi_post_init") (param i32))
                (func (export "cabi_post_handle-batch") (param i32))
                (func (export "cabi_post_on-job-complete") (param i32)))"#
        );
        let mut module = wat::parse_str(&wat).expect("valid text");
        wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8)
            .expect("metadata embeds");
        module
    }

    #[test]
    fn a_module_of_the_world_becomes_a_component_and_an_abi_v1_module_is_left_alone() {
        let module = world_module("");
        assert!(is_world_module(&module));
        let component = component(&module).expect("it adapts");
        assert!(component.starts_with(b"\0asm\x0d\0\x01\0"), "a component's header");
        wasmparser::Validator::new().validate_all(&component).expect("a valid component");

        let plain = wat::parse_str(r#"(module (func (export "wasmbatch_abi_version") (result i32) i32.const 1))"#)
            .expect("valid text");
        assert!(!is_world_module(&plain));
        assert!(!is_world_module(&component), "a component is not a module to adapt");
        assert!(!is_world_module(b"\0asm\x01\0\0\0\xff\xff"), "a broken module is compiled, and told broken there");
    }

    #[test]
    fn a_module_that_cannot_be_adapted_says_why() {
        let module = world_module(r#"(import "elsewhere" "f" (func))"#);
        assert!(is_world_module(&module));
        let error = component(&module).expect_err("it cannot adapt");
        assert!(error.contains("elsewhere"), "the message names the import: {error}");
    }
}
