//! ABI validation of modules: random valid modules (wasm-smith), and raw bytes, give a
//! `Capabilities` or an `AbiError`, never a panic.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use wasmbatch::abi;

fn engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(wasmtime::Engine::default)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(module) = wasmtime::Module::validate(engine(), data).and_then(|()| wasmtime::Module::new(engine(), data)) {
        let _ = abi::validate(&module);
    }
    let mut u = Unstructured::new(data);
    let mut config = wasm_smith::Config::default();
    config.max_funcs = 8;
    config.max_exports = 8;
    config.max_imports = 4;
    config.export_everything = true;
    if let Ok(generated) = wasm_smith::Module::new(config, &mut u) {
        if let Ok(module) = wasmtime::Module::new(engine(), generated.to_bytes()) {
            let _ = abi::validate(&module);
        }
    }
});
