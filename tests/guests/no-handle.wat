;; Not a valid guest: it lacks `wasmbatch_handle`. The host must refuse it by name.
(module
  (memory (export "memory") 1)
  (func (export "wasmbatch_abi_version") (result i32) (i32.const 1))
  (func (export "wasmbatch_alloc") (param i32) (result i32) (i32.const 1024)))
