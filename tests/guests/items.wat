;; A guest that takes its batches with their items' offsets (`wasmbatch_handle_items`,
;; docs/abi.md "Items' offsets"), written from the ABI document alone.
;;
;; With offsets it emits every item's JSON text, as the offsets delimit it, as one
;; result each: the results are then exactly the batch's items. Called without them
;; (`wasmbatch_handle`) it emits one result, "whole". Memory is a bump allocator reset
;; after each call, since the guest owns the buffers the host passes in.
(module
  (import "wasmbatch" "emit" (func $emit (param i32 i32) (result i32)))
  (import "wasmbatch" "set_error" (func $set_error (param i32 i32)))

  (memory (export "memory") 1)
  (data (i32.const 16) "\"whole\"")                          ;; 7 bytes
  (data (i32.const 32) "an item is not JSON")                ;; 19 bytes
  (global $heap (mut i32) (i32.const 1024))

  (func (export "wasmbatch_abi_version") (result i32) (i32.const 1))

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
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  (func (export "wasmbatch_handle")
    (param $job_ptr i32) (param $job_len i32) (param $batch_ptr i32) (param $batch_len i32)
    (result i32)
    (global.set $heap (i32.const 1024))
    (drop (call $emit (i32.const 16) (i32.const 7)))
    (i32.const 0))

  (func (export "wasmbatch_handle_items")
    (param $job_ptr i32) (param $job_len i32) (param $batch_ptr i32) (param $batch_len i32)
    (param $count i32) (result i32)
    (local $spans i32) (local $pair i32) (local $i i32) (local $start i32) (local $end i32)
    ;; The offsets follow the batch, from the next multiple of 4.
    (local.set $spans
      (i32.add (local.get $batch_ptr)
               (i32.and (i32.add (local.get $batch_len) (i32.const 3)) (i32.const -4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $pair (i32.add (local.get $spans) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $start (i32.load (local.get $pair)))
        (local.set $end (i32.load offset=4 (local.get $pair)))
        (if (i32.ne (call $emit (i32.add (local.get $batch_ptr) (local.get $start))
                                (i32.sub (local.get $end) (local.get $start)))
                    (i32.const 0))
          (then
            (global.set $heap (i32.const 1024))
            (call $set_error (i32.const 32) (i32.const 19))
            (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (global.set $heap (i32.const 1024))
    (i32.const 0))
)
