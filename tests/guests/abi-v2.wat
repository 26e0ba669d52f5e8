;; Not a guest this host speaks to: it claims ABI version 2.
(module
  (memory (export "memory") 1)
  (func (export "wasmbatch_abi_version") (result i32) (i32.const 2))
  (func (export "wasmbatch_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32) (i32.const 0)))
