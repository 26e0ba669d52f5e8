;; Imports `sock_open` and `sock_connect`, the socket-creating functions some runtimes
;; add to WASI preview 1 (WasmEdge's extension). wasmbatch provides neither, so the
;; module must be refused when it is loaded, naming the import.
(module
  (import "wasi_snapshot_preview1" "sock_open" (func $open (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_connect" (func $connect (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "wasmbatch_abi_version") (result i32) i32.const 1)
  (func (export "wasmbatch_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32)
    (drop (call $open (i32.const 1) (i32.const 1) (i32.const 200)))
    (call $connect (i32.load (i32.const 200)) (i32.const 300))))
