//! Guest ABI v1: the names and types a module must export and may import.
//!
//! `docs/abi.md` is the specification; this module checks a compiled module against
//! it before anything runs, and names exactly what is wrong. The one check that needs
//! running code, the version the guest reports, is made by [`crate::plugin`] on the
//! first instance.

use wasmtime::{ExternType, FuncType, Module, ValType};

/// The ABI version this host speaks.
pub const ABI_VERSION: i32 = 1;

/// The host's import module.
pub const HOST_MODULE: &str = "wasmbatch";
/// WASI preview 1's import module.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

pub(crate) const MEMORY: &str = "memory";
pub(crate) const INITIALIZE: &str = "_initialize";
pub(crate) const ABI_VERSION_FN: &str = "wasmbatch_abi_version";
pub(crate) const ALLOC: &str = "wasmbatch_alloc";
pub(crate) const INIT: &str = "wasmbatch_init";
pub(crate) const HANDLE: &str = "wasmbatch_handle";
pub(crate) const HANDLE_ITEMS: &str = "wasmbatch_handle_items";
pub(crate) const ON_JOB_COMPLETE: &str = "wasmbatch_on_job_complete";

/// Return statuses of `init`, `handle` and `on_job_complete`.
pub(crate) mod status {
    pub(crate) const OK: i32 = 0;
    pub(crate) const FAILED: i32 = 1;
    pub(crate) const INVALID_INPUT: i32 = 2;
}

use ValType::I32;

/// Exports of ABI v1 that are functions: name, parameters, results, required.
const FUNCTIONS: &[(&str, &[ValType], &[ValType], bool)] = &[
    (INITIALIZE, &[], &[], false),
    (ABI_VERSION_FN, &[], &[I32], true),
    (ALLOC, &[I32], &[I32], true),
    (INIT, &[I32, I32], &[I32], false),
    (HANDLE, &[I32, I32, I32, I32], &[I32], true),
    (HANDLE_ITEMS, &[I32, I32, I32, I32, I32], &[I32], false),
    (ON_JOB_COMPLETE, &[I32, I32, I32, I32], &[I32], false),
];

/// Imports of the `wasmbatch` module: name, parameters, results.
pub(crate) const HOST_FUNCTIONS: &[(&str, &[ValType], &[ValType])] = &[
    ("set_error", &[I32, I32], &[]),
    ("log", &[I32, I32, I32], &[]),
    ("panic", &[I32, I32], &[]),
    ("batch_id", &[I32, I32], &[I32]),
    ("attempt", &[], &[I32]),
    ("submit_job", &[I32, I32, I32, I32, I32, I32], &[I32]),
    ("http_request", &[I32, I32, I32, I32, I32], &[I32]),
    ("object_get", &[I32, I32, I32], &[I32]),
    ("object_read", &[I32, I32, I32, I32], &[I32]),
    ("object_put", &[I32, I32, I32, I32, I32], &[I32]),
    ("emit", &[I32, I32], &[I32]),
    ("item_error", &[I32, I32, I32], &[]),
    ("item_reject", &[I32, I32, I32], &[]),
    ("results_open", &[I32], &[I32]),
    ("results_next", &[I32], &[I32]),
];

/// Which optional parts of the ABI a module provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Exports `_initialize`.
    pub initialize: bool,
    /// Exports `wasmbatch_init`.
    pub init: bool,
    /// Exports `wasmbatch_on_job_complete`.
    pub on_job_complete: bool,
    /// Exports `wasmbatch_handle_items`: takes a batch with its items' offsets.
    pub handle_items: bool,
}

/// A module that does not follow ABI v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    /// A required export is absent.
    #[error("the module does not export `{name}`, which ABI v{ABI_VERSION} requires ({what})")]
    MissingExport {
        /// The export's name.
        name: &'static str,
        /// What the export is.
        what: String,
    },
    /// An export has the wrong kind or signature.
    #[error("export `{name}` has type {found}, but ABI v{ABI_VERSION} requires {expected}")]
    WrongExportType {
        /// The export's name.
        name: &'static str,
        /// What the ABI requires.
        expected: String,
        /// What the module has.
        found: String,
    },
    /// An import from a module the host does not provide.
    #[error(
        "the module imports `{module}::{name}`, but a guest may import only from `{WASI_MODULE}` and `{HOST_MODULE}`"
    )]
    ForeignImport {
        /// The import's module.
        module: String,
        /// The import's name.
        name: String,
    },
    /// An import from `wasmbatch` that is not part of the ABI, or has the wrong type.
    #[error("the module imports `{HOST_MODULE}::{name}` as {found}, but the host provides {expected}")]
    BadHostImport {
        /// The import's name.
        name: String,
        /// What the host provides under that name.
        expected: String,
        /// What the module asks for.
        found: String,
    },
    /// The guest reports an ABI version this host does not speak.
    #[error("the module implements ABI version {found}, but this host speaks version {ABI_VERSION}")]
    VersionMismatch {
        /// What `wasmbatch_abi_version` returned.
        found: i32,
    },
}

fn describe_func(params: &[ValType], results: &[ValType]) -> String {
    let list = |tys: &[ValType]| tys.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
    format!("func({}) -> ({})", list(params), list(results))
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => describe_func(&f.params().collect::<Vec<_>>(), &f.results().collect::<Vec<_>>()),
        ExternType::Memory(_) => "memory".into(),
        ExternType::Table(_) => "table".into(),
        ExternType::Global(_) => "global".into(),
        ExternType::Tag(_) => "tag".into(),
    }
}

fn same_signature(f: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    let eq = |a: ValType, b: &ValType| ValType::eq(&a, b);
    f.params().len() == params.len()
        && f.results().len() == results.len()
        && f.params().zip(params).all(|(a, b)| eq(a, b))
        && f.results().zip(results).all(|(a, b)| eq(a, b))
}

/// Checks `module`'s exports and imports against ABI v1.
pub fn validate(module: &Module) -> Result<Capabilities, AbiError> {
    for import in module.imports() {
        match import.module() {
            WASI_MODULE => {}
            HOST_MODULE => {
                let known = HOST_FUNCTIONS.iter().find(|(n, ..)| *n == import.name());
                let fits = |params: &[ValType], results: &[ValType]| matches!(import.ty(), ExternType::Func(f) if same_signature(&f, params, results));
                match known {
                    Some((_, params, results)) if fits(params, results) => {}
                    Some((_, params, results)) => {
                        return Err(AbiError::BadHostImport {
                            name: import.name().into(),
                            expected: describe_func(params, results),
                            found: describe(&import.ty()),
                        });
                    }
                    None => {
                        return Err(AbiError::BadHostImport {
                            name: import.name().into(),
                            expected: format!(
                                "nothing by that name (it provides {})",
                                HOST_FUNCTIONS.iter().map(|(n, ..)| *n).collect::<Vec<_>>().join(", ")
                            ),
                            found: describe(&import.ty()),
                        });
                    }
                }
            }
            other => return Err(AbiError::ForeignImport { module: other.into(), name: import.name().into() }),
        }
    }

    match module.get_export(MEMORY) {
        Some(ExternType::Memory(_)) => {}
        Some(other) => {
            return Err(AbiError::WrongExportType { name: MEMORY, expected: "memory".into(), found: describe(&other) });
        }
        None => return Err(AbiError::MissingExport { name: MEMORY, what: "the linear memory".into() }),
    }

    let present = |name: &'static str| -> Result<bool, AbiError> {
        let (_, params, results, required) =
            FUNCTIONS.iter().find(|(n, ..)| *n == name).expect("every ABI function is listed");
        match module.get_export(name) {
            Some(ExternType::Func(f)) if same_signature(&f, params, results) => Ok(true),
            Some(other) => Err(AbiError::WrongExportType {
                name,
                expected: describe_func(params, results),
                found: describe(&other),
            }),
            None if *required => {
                Err(AbiError::MissingExport { name, what: format!("a function {}", describe_func(params, results)) })
            }
            None => Ok(false),
        }
    };
    present(ABI_VERSION_FN)?;
    present(ALLOC)?;
    present(HANDLE)?;
    Ok(Capabilities {
        initialize: present(INITIALIZE)?,
        init: present(INIT)?,
        on_job_complete: present(ON_JOB_COMPLETE)?,
        handle_items: present(HANDLE_ITEMS)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORE: &str = r#"
        (memory (export "memory") 1)
        (func (export "wasmbatch_abi_version") (result i32) i32.const 1)
        (func (export "wasmbatch_alloc") (param i32) (result i32) i32.const 8)
        (func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32) i32.const 0)
    "#;

    fn check(wat: &str) -> Result<Capabilities, AbiError> {
        let engine = wasmtime::Engine::default();
        validate(&Module::new(&engine, format!("(module {wat})")).unwrap())
    }

    #[test]
    fn minimal_module_is_valid_with_no_optional_parts() {
        let caps = check(CORE).unwrap();
        assert_eq!(caps, Capabilities { initialize: false, init: false, on_job_complete: false, handle_items: false });
    }

    #[test]
    fn optional_exports_are_detected() {
        let caps = check(&format!(
            r#"{CORE}
            (func (export "_initialize"))
            (func (export "wasmbatch_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "wasmbatch_on_job_complete") (param i32 i32 i32 i32) (result i32) i32.const 0)
            (func (export "wasmbatch_handle_items") (param i32 i32 i32 i32 i32) (result i32) i32.const 0)"#
        ))
        .unwrap();
        assert_eq!(caps, Capabilities { initialize: true, init: true, on_job_complete: true, handle_items: true });
        // The offsets' export with another signature is named, like any other.
        let err = check(&format!(
            r#"{CORE}
            (func (export "wasmbatch_handle_items") (param i32 i32 i32 i32) (result i32) i32.const 0)"#
        ))
        .unwrap_err();
        assert!(matches!(err, AbiError::WrongExportType { name: "wasmbatch_handle_items", .. }), "{err}");
    }

    #[test]
    fn missing_handle_is_named() {
        let err = check(
            r#"(memory (export "memory") 1)
            (func (export "wasmbatch_abi_version") (result i32) i32.const 1)
            (func (export "wasmbatch_alloc") (param i32) (result i32) i32.const 8)"#,
        )
        .unwrap_err();
        assert!(matches!(err, AbiError::MissingExport { name: "wasmbatch_handle", .. }), "{err}");
        assert!(err.to_string().contains("func(i32, i32, i32, i32) -> (i32)"), "{err}");
    }

    #[test]
    fn missing_memory_is_named() {
        let err = check(
            r#"(func (export "wasmbatch_abi_version") (result i32) i32.const 1)
            (func (export "wasmbatch_alloc") (param i32) (result i32) i32.const 8)
            (func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32) i32.const 0)"#,
        )
        .unwrap_err();
        assert_eq!(err, AbiError::MissingExport { name: "memory", what: "the linear memory".into() });
    }

    #[test]
    fn wrong_signature_is_named_with_both_types() {
        let err = check(&CORE.replace(
            r#"(func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32) i32.const 0)"#,
            r#"(func (export "wasmbatch_handle") (param i32 i32) (result i32) i32.const 0)"#,
        ))
        .unwrap_err();
        assert_eq!(
            err,
            AbiError::WrongExportType {
                name: "wasmbatch_handle",
                expected: "func(i32, i32, i32, i32) -> (i32)".into(),
                found: "func(i32, i32) -> (i32)".into(),
            }
        );
    }

    #[test]
    fn export_of_the_wrong_kind_is_named() {
        let err = check(&format!(r#"{CORE} (global (export "wasmbatch_init") i32 (i32.const 0))"#)).unwrap_err();
        assert!(
            matches!(err, AbiError::WrongExportType { name: "wasmbatch_init", ref found, .. } if found == "global")
        );
    }

    #[test]
    fn foreign_import_modules_are_refused() {
        let err = check(&format!(r#"(import "env" "socket" (func (param i32))) {CORE}"#)).unwrap_err();
        assert_eq!(err, AbiError::ForeignImport { module: "env".into(), name: "socket".into() });
    }

    #[test]
    fn unknown_or_mistyped_host_imports_are_refused() {
        let err = check(&format!(r#"(import "wasmbatch" "spawn" (func)) {CORE}"#)).unwrap_err();
        assert!(matches!(err, AbiError::BadHostImport { ref name, .. } if name == "spawn"), "{err}");
        assert!(err.to_string().contains("set_error, log, panic, batch_id, attempt, submit_job"), "{err}");

        let err = check(&format!(r#"(import "wasmbatch" "log" (func (param i32 i32))) {CORE}"#)).unwrap_err();
        assert_eq!(
            err,
            AbiError::BadHostImport {
                name: "log".into(),
                expected: "func(i32, i32, i32) -> ()".into(),
                found: "func(i32, i32) -> ()".into(),
            }
        );
    }

    #[test]
    fn wasi_and_host_imports_are_accepted() {
        check(&format!(
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (import "wasmbatch" "set_error" (func (param i32 i32)))
            (import "wasmbatch" "log" (func (param i32 i32 i32)))
            (import "wasmbatch" "panic" (func (param i32 i32)))
            (import "wasmbatch" "batch_id" (func (param i32 i32) (result i32)))
            (import "wasmbatch" "attempt" (func (result i32)))
            {CORE}"#
        ))
        .unwrap();
    }
}
