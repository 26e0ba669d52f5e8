//! The guest-memory convention of ABI v1, in one place for every host function.
//!
//! A guest passes bytes to the host as `(ptr, len)` into its exported `memory`; the
//! host passes bytes back either into a buffer the guest offers (`(ptr, cap)`: the
//! host writes what fits and answers the full length), or into a buffer it asks the
//! guest to allocate with `wasmbatch_alloc` (ownership passes to the guest), whose
//! pointer and length it writes at an `out` pointer as two little-endian `u32`.
//!
//! Pointers and lengths arrive as `i32` and are read as `u32`: a negative length is
//! a length over 2 GiB, never a negative one. Every function here is generic over the
//! store's data, so that the convention is tested on inline WAT guests.

use wasmtime::{AsContextMut, Caller, Memory, TypedFunc};

use crate::abi;

/// What one host call reads at most through [`read_capped`]: log lines, error
/// messages, item errors.
pub(crate) const READ_CAP: usize = 64 << 10;

/// Why bytes could not be passed between host and guest.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MemoryError {
    /// The guest exports no `memory`.
    #[error("the guest exports no memory")]
    NoMemory,
    /// The guest exports no `wasmbatch_alloc`, or one of another type.
    #[error("the guest exports no wasmbatch_alloc(i32) -> i32")]
    NoAlloc,
    /// A pointer and length the guest gave reach past its memory.
    #[error("host call with out-of-bounds pointer {ptr}+{len}")]
    OutOfBounds {
        /// The pointer, as an unsigned offset.
        ptr: usize,
        /// The length.
        len: usize,
    },
    /// `wasmbatch_alloc` answered a buffer outside the guest's memory.
    #[error("wasmbatch_alloc returned {0}, outside the guest's memory")]
    BadAllocation(u32),
    /// The bytes do not fit a 32-bit guest.
    #[error("{0} bytes do not fit a 32-bit guest")]
    TooLarge(usize),
}

fn offset(value: i32) -> usize {
    value as u32 as usize
}

/// The guest's exported memory.
pub(crate) fn memory<T>(caller: &mut Caller<'_, T>) -> Result<Memory, MemoryError> {
    caller.get_export(abi::MEMORY).and_then(|e| e.into_memory()).ok_or(MemoryError::NoMemory)
}

fn alloc<T>(caller: &mut Caller<'_, T>) -> Result<TypedFunc<i32, i32>, MemoryError> {
    caller
        .get_export(abi::ALLOC)
        .and_then(|e| e.into_func())
        .and_then(|f| f.typed::<i32, i32>(&*caller).ok())
        .ok_or(MemoryError::NoAlloc)
}

/// `len` bytes at `ptr`, borrowed, cut to [`READ_CAP`]: for messages, where a longer
/// one is not an error.
pub(crate) fn read_capped<'a, T>(caller: &'a mut Caller<'_, T>, ptr: i32, len: i32) -> Result<&'a [u8], MemoryError> {
    let memory = memory(caller)?;
    let (ptr, len) = (offset(ptr), offset(len).min(READ_CAP));
    memory.data(caller).get(ptr..ptr.saturating_add(len)).ok_or(MemoryError::OutOfBounds { ptr, len })
}

/// `len` bytes at `ptr`, copied; `None` when `len` is over `max` (nothing is read).
pub(crate) fn copy<T>(
    caller: &mut Caller<'_, T>,
    ptr: i32,
    len: i32,
    max: usize,
) -> Result<Option<Vec<u8>>, MemoryError> {
    let (ptr, len) = (offset(ptr), offset(len));
    if len > max {
        return Ok(None);
    }
    if len == 0 {
        return Ok(Some(Vec::new()));
    }
    let memory = memory(caller)?;
    let bytes = memory.data(&*caller).get(ptr..ptr.saturating_add(len)).ok_or(MemoryError::OutOfBounds { ptr, len })?;
    Ok(Some(bytes.to_vec()))
}

/// Writes what fits of `bytes` into the guest's buffer `(ptr, cap)` (a negative `cap`
/// is none) and returns how many bytes were written.
pub(crate) fn write_into<T>(
    caller: &mut Caller<'_, T>,
    ptr: i32,
    cap: i32,
    bytes: &[u8],
) -> Result<usize, MemoryError> {
    let memory = memory(caller)?;
    let n = bytes.len().min(cap.max(0) as usize);
    memory
        .write(&mut *caller, offset(ptr), &bytes[..n])
        .map_err(|_| MemoryError::OutOfBounds { ptr: offset(ptr), len: n })?;
    Ok(n)
}

/// Hands `bytes` to the guest from inside a host call: a buffer from its
/// `wasmbatch_alloc` (which it then owns), whose pointer and length are written at
/// `out`. Empty: `(0, 0)`, nothing allocated. `false` when the guest could not allocate
/// (`(0, 0)` is written then).
/// The guest is called back asynchronously (its store is an async one).
pub(crate) async fn give<T: Send>(caller: &mut Caller<'_, T>, out: i32, bytes: &[u8]) -> wasmtime::Result<bool> {
    let memory = memory(caller)?;
    let mut ptr = 0u32;
    let mut given = true;
    if !bytes.is_empty() {
        let len = i32::try_from(bytes.len()).map_err(|_| MemoryError::TooLarge(bytes.len()))?;
        ptr = alloc(caller)?.call_async(&mut *caller, len).await? as u32;
        if ptr == 0 {
            given = false;
        } else {
            memory.write(&mut *caller, ptr as usize, bytes).map_err(|_| MemoryError::BadAllocation(ptr))?;
        }
    }
    let len = if given { bytes.len() as u32 } else { 0 };
    let mut pair = [0u8; 8];
    pair[..4].copy_from_slice(&ptr.to_le_bytes());
    pair[4..].copy_from_slice(&len.to_le_bytes());
    memory
        .write(&mut *caller, offset(out), &pair)
        .map_err(|_| MemoryError::OutOfBounds { ptr: offset(out), len: 8 })?;
    Ok(given)
}

/// Why [`put`] could not hand bytes to a guest.
#[derive(Debug)]
pub(crate) enum PutError {
    /// The guest trapped or was interrupted in `wasmbatch_alloc`.
    Wasm(wasmtime::Error),
    /// `wasmbatch_alloc` answered 0: the guest is out of memory.
    NoRoom(usize),
    /// The bytes do not fit, or the allocation was out of bounds.
    Memory(MemoryError),
}

/// Copies `parts`, one after the other, into one buffer the guest allocates, from
/// outside a host call (the arguments of `init`, `handle`, `on_job_complete`);
/// ownership passes to the guest. Empty: `(0, 0)`.
pub(crate) async fn put<T: Send>(
    mut store: impl AsContextMut<Data = T>,
    memory: Memory,
    alloc: &TypedFunc<i32, i32>,
    parts: &[&[u8]],
) -> Result<(i32, i32), PutError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total == 0 {
        return Ok((0, 0));
    }
    let len = i32::try_from(total).map_err(|_| PutError::Memory(MemoryError::TooLarge(total)))?;
    let ptr = alloc.call_async(&mut store, len).await.map_err(PutError::Wasm)?;
    if ptr == 0 {
        return Err(PutError::NoRoom(total));
    }
    let mut at = offset(ptr);
    for part in parts {
        memory.write(&mut store, at, part).map_err(|_| PutError::Memory(MemoryError::BadAllocation(ptr as u32)))?;
        at += part.len();
    }
    Ok((ptr, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Engine, Instance, Linker, Module, Store};

    /// A guest with one page of memory, a bump `wasmbatch_alloc` that answers 0 for a
    /// request over 1 KiB (and, asked for exactly 999 bytes, an address past its memory),
    /// and `run(a, b, c)` that calls the host's `test.call(a, b, c)`.
    const GUEST: &str = r#"
        (module
          (import "test" "call" (func $call (param i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (global $next (mut i32) (i32.const 4096))
          (func (export "wasmbatch_alloc") (param $n i32) (result i32)
            (local $p i32)
            (if (i32.eq (local.get $n) (i32.const 999)) (then (return (i32.const 70000))))
            (if (i32.gt_u (local.get $n) (i32.const 1024)) (then (return (i32.const 0))))
            (local.set $p (global.get $next))
            (global.set $next (i32.add (global.get $next) (local.get $n)))
            (local.get $p))
          (func (export "run") (param i32 i32 i32) (result i32)
            (call $call (local.get 0) (local.get 1) (local.get 2)))
          (data (i32.const 16) "hello, host"))
    "#;

    type Host = fn(&mut Caller<'_, ()>, i32, i32, i32) -> wasmtime::Result<i32>;

    fn guest(host: Host) -> (Store<()>, Instance) {
        let engine = Engine::default();
        let module = Module::new(&engine, GUEST).unwrap();
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap("test", "call", move |mut caller: Caller<'_, ()>, a: i32, b: i32, c: i32| {
                host(&mut caller, a, b, c)
            })
            .unwrap();
        let mut store = Store::new(&engine, ());
        let instance = linker.instantiate(&mut store, &module).unwrap();
        (store, instance)
    }

    fn run(host: Host, args: (i32, i32, i32)) -> (Store<()>, Instance, wasmtime::Result<i32>) {
        let (mut store, instance) = guest(host);
        let run = instance.get_typed_func::<(i32, i32, i32), i32>(&mut store, "run").unwrap();
        let result = run.call(&mut store, args);
        (store, instance, result)
    }

    fn read(store: &mut Store<()>, instance: &Instance, at: usize, len: usize) -> Vec<u8> {
        let memory = instance.get_memory(&mut *store, "memory").unwrap();
        memory.data(&*store)[at..at + len].to_vec()
    }

    fn pair(store: &mut Store<()>, instance: &Instance, at: usize) -> (u32, u32) {
        let bytes = read(store, instance, at, 8);
        (u32::from_le_bytes(bytes[..4].try_into().unwrap()), u32::from_le_bytes(bytes[4..].try_into().unwrap()))
    }

    #[test]
    fn copy_reads_within_bounds_and_refuses_the_rest() {
        let (_, _, ok) = run(|c, p, l, _| Ok(i32::from(copy(c, p, l, 64)?.unwrap() == b"hello, host")), (16, 11, 0));
        assert_eq!(ok.unwrap(), 1);
        let (_, _, empty) = run(|c, p, l, _| Ok(copy(c, p, l, 64)?.unwrap().len() as i32), (-5, 0, 0));
        assert_eq!(empty.unwrap(), 0, "an empty read touches no memory, whatever the pointer");
        let (_, _, over) = run(|c, p, l, _| Ok(i32::from(copy(c, p, l, 10)?.is_none())), (16, 11, 0));
        assert_eq!(over.unwrap(), 1, "over the maximum: None, nothing read");
        let (_, _, negative) = run(|c, p, l, _| Ok(i32::from(copy(c, p, l, 1 << 20)?.is_none())), (16, -1, 0));
        assert_eq!(negative.unwrap(), 1, "a negative length is a length over 2 GiB");
        let (_, _, outside) =
            run(|c, p, l, _| Ok(copy(c, p, l, 1 << 20)?.map(|v| v.len() as i32).unwrap_or(-1)), (65530, 11, 0));
        let e = outside.unwrap_err();
        assert!(format!("{e:#}").contains("out-of-bounds pointer 65530+11"), "{e:#}");
        let (_, _, wrapped) =
            run(|c, p, l, _| Ok(copy(c, p, l, 1 << 20)?.map(|v| v.len() as i32).unwrap_or(-1)), (-1, 4, 0));
        assert!(format!("{:#}", wrapped.unwrap_err()).contains("out-of-bounds"), "a negative pointer is past 2 GiB");
    }

    #[test]
    fn read_capped_cuts_long_messages_instead_of_failing() {
        let (_, _, ok) = run(|c, p, l, _| Ok(read_capped(c, p, l)?.len() as i32), (0, 65536, 0));
        assert_eq!(ok.unwrap(), READ_CAP as i32);
        let (_, _, text) = run(|c, p, l, _| Ok(i32::from(read_capped(c, p, l)? == b"hello")), (16, 5, 0));
        assert_eq!(text.unwrap(), 1);
        let (_, _, outside) = run(|c, p, l, _| Ok(read_capped(c, p, l)?.len() as i32), (65535, 2, 0));
        assert!(outside.is_err());
    }

    #[test]
    fn write_into_writes_what_fits_and_says_how_much() {
        let (mut store, instance, n) = run(|c, p, cap, _| Ok(write_into(c, p, cap, b"batch-42")? as i32), (100, 5, 0));
        assert_eq!(n.unwrap(), 5);
        assert_eq!(read(&mut store, &instance, 100, 8), b"batch\0\0\0");
        let (_, _, none) = run(|c, p, cap, _| Ok(write_into(c, p, cap, b"batch-42")? as i32), (100, -3, 0));
        assert_eq!(none.unwrap(), 0, "a negative capacity is none");
        let (_, _, outside) = run(|c, p, cap, _| Ok(write_into(c, p, cap, b"batch-42")? as i32), (65534, 8, 0));
        assert!(format!("{:#}", outside.unwrap_err()).contains("out-of-bounds"));
    }

    /// Runs the guest's `run(out, 0, 0)` with a host `test.call` that gives `bytes`
    /// (asynchronously, as the host's functions do) and answers whether they were given.
    fn run_giving(bytes: &'static [u8], out: i32) -> (Store<()>, Instance, wasmtime::Result<i32>) {
        let engine = Engine::default();
        let module = Module::new(&engine, GUEST).unwrap();
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap_async("test", "call", move |mut caller: Caller<'_, ()>, (out, _, _): (i32, i32, i32)| {
                Box::new(async move { Ok(i32::from(give(&mut caller, out, bytes).await?)) })
            })
            .unwrap();
        let mut store = Store::new(&engine, ());
        let (instance, result) = crate::engine::drive(async {
            let instance = linker.instantiate_async(&mut store, &module).await.unwrap();
            let run = instance.get_typed_func::<(i32, i32, i32), i32>(&mut store, "run").unwrap();
            (instance, run.call_async(&mut store, (out, 0, 0)).await)
        });
        (store, instance, result)
    }

    #[test]
    fn give_allocates_in_the_guest_and_writes_the_pair() {
        let (mut store, instance, given) = run_giving(b"answer", 200);
        assert_eq!(given.unwrap(), 1);
        let (ptr, len) = pair(&mut store, &instance, 200);
        assert_eq!((ptr, len), (4096, 6), "the first bump allocation");
        assert_eq!(read(&mut store, &instance, 4096, 6), b"answer");

        let (mut store, instance, empty) = run_giving(b"", 200);
        assert_eq!(empty.unwrap(), 1);
        assert_eq!(pair(&mut store, &instance, 200), (0, 0), "empty: nothing allocated");

        let (mut store, instance, refused) = run_giving(&[7; 2000], 200);
        assert_eq!(refused.unwrap(), 0, "the guest could not allocate");
        assert_eq!(pair(&mut store, &instance, 200), (0, 0));

        let (_, _, bad) = run_giving(&[7; 999], 200);
        assert!(format!("{:#}", bad.unwrap_err()).contains("wasmbatch_alloc returned 70000"));

        let (_, _, outside) = run_giving(b"answer", 65533);
        assert!(format!("{:#}", outside.unwrap_err()).contains("out-of-bounds pointer 65533+8"));
    }

    #[test]
    fn put_hands_arguments_to_a_guest_from_outside_a_call() {
        let (mut store, instance) = guest(|_, _, _, _| Ok(0));
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, abi::ALLOC).unwrap();
        let mut put = |bytes: &[u8]| crate::engine::drive(put(&mut store, memory, &alloc, &[bytes]));
        assert_eq!(put(b"").unwrap(), (0, 0));
        assert_eq!(put(b"[1,2]").unwrap(), (4096, 5));
        assert!(matches!(put(&[0; 2000]), Err(PutError::NoRoom(2000))));
        assert!(matches!(put(&[0; 999]), Err(PutError::Memory(MemoryError::BadAllocation(70000)))));
        assert_eq!(read(&mut store, &instance, 4096, 5), b"[1,2]");
        // Parts end to end in one buffer (a batch and its items' offsets).
        let parts: [&[u8]; 3] = [b"ab", b"", b"cd"];
        assert_eq!(crate::engine::drive(super::put(&mut store, memory, &alloc, &parts)).unwrap(), (4101, 4));
        assert_eq!(read(&mut store, &instance, 4101, 4), b"abcd");
    }
}
