//! The job-file parser and the batching of its `item_list`: any bytes give a job or an
//! error, never a panic; a valid job's batches cover every item exactly once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmbatch::job::source;
use wasmbatch::job::submission::{SourceSpec, Submission};

fuzz_target!(|data: &[u8]| {
    let Ok(job) = Submission::parse(data, "fuzz") else { return };
    assert!(job.workers >= 1);
    if let SourceSpec::ItemList { items, batch_size } = &job.source {
        let (n, size) = (items.len(), *batch_size);
        let mut source = source::open(job.source, None, None).expect("item lists always open");
        let (mut batches, mut seen) = (0u64, 0usize);
        while let Some(batch) = source.next_batch().expect("item lists never fail") {
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(&batch.body).expect("a batch is a JSON array");
            assert_eq!(parsed.len(), batch.items);
            assert!(batch.items >= 1 && batch.items <= size);
            seen += batch.items;
            batches += 1;
        }
        assert_eq!(seen, n);
        assert_eq!(batches, n.div_ceil(size) as u64);
    }
});
