//! `noop` — accepts any batch and does nothing: the baseline for measuring the host.
//!
//! Every cost of a batch through this plugin is the host's — its one scan of the batch,
//! copying it into the guest, the call, and (under `serve`) HTTP. The handler takes the
//! items unparsed ([`Items`]), so the guest reads none of them: with the offsets the
//! host found (`wasmbatch_handle_items`) it does not scan the batch at all; without
//! them (`wasmbatch run`, which builds the batches itself) the SDK scans it once.
//!
//! Build: `cargo build --target wasm32-wasip1 --release -p noop`
//! Run:   `wasmbatch serve --plugin target/wasm32-wasip1/release/noop.wasm`

use wasmbatch_guest::{Context, Items, Result};

#[wasmbatch_guest::handler]
fn handle(_ctx: &Context, _items: Items<'_>) -> Result<()> {
    Ok(())
}
