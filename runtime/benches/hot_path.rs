//! Micro-benchmarks of the batch path: JSON validation of a body, one call into a warm
//! instance, and the copy of a batch into guest memory (the same call with a large
//! batch). Run with `cargo bench -p wasmbatch`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wasmbatch::http::batch::check_batch;
use wasmbatch::metrics::Metrics;
use wasmbatch::plugin::{BatchCall, BatchId, JobContext, LoadOptions, Plugin, drive};

/// A guest that accepts every batch: a bump allocator reset on each call, nothing else.
const NOOP_WAT: &str = r#"(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "wasmbatch_abi_version") (result i32) (i32.const 1))
  (func (export "wasmbatch_alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.add (i32.div_u (local.get $len) (i32.const 65536)) (i32.const 1))) (i32.const -1))
        (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))
  (func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32)
    (global.set $heap (i32.const 1024))
    (i32.const 0)))"#;

fn batch(items: usize) -> Vec<u8> {
    let item = r#"{"id":"item-0001","user":"u-1234567","score":0.123456,"tags":["alpha","beta"],"ok":true}"#;
    format!("[{}]", vec![item; items].join(",")).into_bytes()
}

fn hot_path(c: &mut Criterion) {
    let small = batch(10);
    let large = batch(1000);

    let mut group = c.benchmark_group("json_validation");
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("check_batch_10_items", |b| b.iter(|| check_batch(std::hint::black_box(&small)).unwrap()));
    group.finish();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noop.wat");
    std::fs::write(&path, NOOP_WAT).unwrap();
    let options = LoadOptions { instances: 2, ..LoadOptions::default() };
    let plugin = Arc::new(Plugin::load(&path, &options, Metrics::new("bench")).unwrap());
    let plugin = plugin.bind(JobContext::default()).unwrap();
    let mut instance = drive(plugin.instance(Arc::new(AtomicBool::new(false)))).unwrap();

    let mut group = c.benchmark_group("guest_call");
    for (name, body) in [("handle_10_items", &small), ("handle_1000_items", &large)] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let body = bytes::Bytes::copy_from_slice(body);
        group.bench_function(name, |b| {
            b.iter(|| {
                let body = std::hint::black_box(body.clone());
                let call = BatchCall { tag: 0, id: BatchId::Content, attempt: 1, body, items: None };
                drive(instance.handle("job", call)).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("instance");
    group.bench_function("instantiate_and_init", |b| {
        b.iter(|| drop(drive(plugin.instance(Arc::new(AtomicBool::new(false)))).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
