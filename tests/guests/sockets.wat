;; Calls every WASI preview 1 socket function (sock_accept, sock_recv, sock_send,
;; sock_shutdown) on file descriptors 0 to 63 — stdio, the preopened directories, and
;; descriptors that do not exist. A host that gave the guest any socket would answer
;; one of them with success (errno 0) or "would block" (errno 6, a listening socket
;; without a connection yet). The batch fails with "a socket call succeeded" then, and
;; succeeds when every call was refused.
(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
  (import "wasmbatch" "set_error" (func $set_error (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "a socket call succeeded")
  (global $heap (mut i32) (i32.const 4096))

  (func (export "wasmbatch_abi_version") (result i32) i32.const 1)

  (func (export "wasmbatch_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (if (i32.gt_u (global.get $heap) (i32.const 65536))
      (then (global.set $heap (i32.const 4096)) (local.set $ptr (i32.const 4096))))
    (local.get $ptr))

  ;; 1 when a call was not refused.
  (func $allowed (param $errno i32) (result i32)
    (i32.or (i32.eqz (local.get $errno)) (i32.eq (local.get $errno) (i32.const 6))))

  (func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32)
    (local $fd i32)
    (local $bad i32)
    ;; One iovec at 64: 16 bytes at 128.
    (i32.store (i32.const 64) (i32.const 128))
    (i32.store (i32.const 68) (i32.const 16))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $fd) (i32.const 64)))
        (local.set $bad (i32.or (local.get $bad)
          (call $allowed (call $accept (local.get $fd) (i32.const 0) (i32.const 200)))))
        (local.set $bad (i32.or (local.get $bad)
          (call $allowed (call $recv (local.get $fd) (i32.const 64) (i32.const 1) (i32.const 0) (i32.const 204) (i32.const 208)))))
        (local.set $bad (i32.or (local.get $bad)
          (call $allowed (call $send (local.get $fd) (i32.const 64) (i32.const 1) (i32.const 0) (i32.const 204)))))
        (local.set $bad (i32.or (local.get $bad)
          (call $allowed (call $shutdown (local.get $fd) (i32.const 3)))))
        (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
        (br $next)))
    (if (local.get $bad)
      (then
        (call $set_error (i32.const 16) (i32.const 23))
        (return (i32.const 1))))
    (i32.const 0)))
