//! `noop` — accepts any batch and does nothing: the baseline for measuring the host.
//!
//! Every cost of a batch through this plugin is the host's — copying the batch into the
//! guest, the call, and (under `serve`) HTTP — plus the SDK's one pass over the batch:
//! items are skimmed as `IgnoredAny`, never built into values.
//!
//! Build: `cargo build --target wasm32-wasip1 --release -p noop`
//! Run:   `wasmbatch serve --plugin target/wasm32-wasip1/release/noop.wasm`

use serde::de::IgnoredAny;
use wasmbatch_guest::{Context, Result};

#[wasmbatch_guest::handler]
fn handle(_ctx: &Context, _items: Vec<IgnoredAny>) -> Result<()> {
    Ok(())
}
