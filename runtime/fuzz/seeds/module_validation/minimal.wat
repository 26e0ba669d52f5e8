;; A wasmbatch guest written by hand from docs/abi.md alone: no SDK, no compiler.
;;
;; It accepts any non-empty batch (and says so on stdout through WASI), rejects an
;; empty batch `[]` with a message via `wasmbatch.set_error`, and logs one line per
;; batch through `wasmbatch.log`. Memory management is a bump allocator that is reset
;; after each call, since the guest owns the buffers the host passes in.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasmbatch" "set_error" (func $set_error (param i32 i32)))
  (import "wasmbatch" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1)

  ;; Static data below 1024; the heap starts there.
  (data (i32.const 16) "minimal: handled a batch\n")       ;; 25 bytes
  (data (i32.const 64) "empty batch")                       ;; 11 bytes
  (data (i32.const 96) "minimal guest called")              ;; 20 bytes
  (global $heap (mut i32) (i32.const 1024))

  (func (export "wasmbatch_abi_version") (result i32) (i32.const 1))

  ;; Bump allocation, growing memory when needed; 0 when it cannot.
  (func (export "wasmbatch_alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32) (local $pages i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (local.set $pages
          (i32.add (i32.div_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
                              (i32.const 65536))
                   (i32.const 1)))
        (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1))
          (then (return (i32.const 0))))))
    ;; Keep 8-byte alignment for the next allocation.
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  (func (export "wasmbatch_handle")
    (param $job_ptr i32) (param $job_len i32) (param $batch_ptr i32) (param $batch_len i32)
    (result i32)
    (call $log (i32.const 2) (i32.const 96) (i32.const 20))
    ;; The buffers are ours now; everything after this call can reuse the space.
    (global.set $heap (i32.const 1024))
    ;; `[]` (possibly with whitespace) is shorter than 3 bytes only when empty.
    (if (i32.lt_u (local.get $batch_len) (i32.const 3))
      (then
        (call $set_error (i32.const 64) (i32.const 11))
        (return (i32.const 1))))
    ;; One iovec at 0: {ptr = 16, len = 25}; bytes written go to 8.
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 25))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.const 0))
)
