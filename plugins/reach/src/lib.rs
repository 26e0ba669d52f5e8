//! `reach` — a plugin that uses every capability a handler can be granted: outbound
//! HTTP, objects, results and single failed items. Its items are commands:
//!
//! | item | what it does | result emitted |
//! |---|---|---|
//! | `http:URL` / `http-post:URL:BODY` | sends the request | `{"item", "status", "bytes"}` |
//! | `get:URL` | reads the object whole | `{"item", "bytes"}` |
//! | `read:URL:OFFSET:LEN` | reads a range of the object | `{"item", "text"}` |
//! | `put:URL:TEXT` | writes the object | `{"item", "put": URL}` |
//! | `emit:JSON` | — | the JSON value |
//! | `fail:MESSAGE` | fails this item alone | — |
//! | `flaky:MESSAGE` | fails this item alone on the first attempt | `{"item", "attempt"}` |
//! | an object URL (`s3://…`, `gs://…`, `az://…`, `file://…`) | reads it, writes `{"url", "bytes", "lines"}` as `<config.out><name>.json` | the same |
//!
//! A call the host refuses or that fails fails its item (with the host's message),
//! not the batch: the other items' results are kept and only the failed ones are
//! tried again. The last form is the end-to-end case of object storage: a
//! `file_path_lister` job over `s3://bucket/images/**` whose handler reads each object
//! and writes a result object.

use serde_json::{Value, json};
use wasmbatch_guest::{Context, Request, Result};

fn run(ctx: &Context, i: usize, item: &str) -> std::result::Result<Option<Value>, String> {
    let (verb, rest) = item.split_once(':').unwrap_or((item, ""));
    let e = |e: wasmbatch_guest::Error| e.message();
    Ok(match verb {
        "http" => {
            let answer = ctx.http(&Request::get(rest)).map_err(e)?;
            Some(json!({"item": i, "status": answer.status, "bytes": answer.body.len()}))
        }
        "http-post" => {
            let (url, body) = rest.rsplit_once(':').ok_or("http-post:URL:BODY")?;
            let answer = ctx.http(&Request::post(url, body.as_bytes())).map_err(e)?;
            Some(json!({"item": i, "status": answer.status, "text": answer.text()}))
        }
        "get" => Some(json!({"item": i, "bytes": ctx.get(rest).map_err(e)?.len()})),
        "read" => {
            let mut parts = rest.rsplitn(3, ':');
            let len: u64 = parts.next().and_then(|n| n.parse().ok()).ok_or("read:URL:OFFSET:LEN")?;
            let offset: u64 = parts.next().and_then(|n| n.parse().ok()).ok_or("read:URL:OFFSET:LEN")?;
            let url = parts.next().ok_or("read:URL:OFFSET:LEN")?;
            let bytes = ctx.read(url, offset, len).map_err(e)?;
            Some(json!({"item": i, "text": String::from_utf8_lossy(&bytes)}))
        }
        "put" => {
            let (url, text) = rest.rsplit_once(':').ok_or("put:URL:TEXT")?;
            ctx.put(url, text.as_bytes()).map_err(e)?;
            Some(json!({"item": i, "put": url}))
        }
        "emit" => Some(serde_json::from_str(rest).map_err(|e| e.to_string())?),
        "fail" => return Err(rest.to_string()),
        "flaky" if ctx.attempt() < 2 => return Err(rest.to_string()),
        "flaky" => Some(json!({"item": i, "attempt": ctx.attempt()})),
        "s3" | "gs" | "az" | "file" => {
            let bytes = ctx.get(item).map_err(e)?;
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            let summary = json!({"url": item, "bytes": bytes.len(), "lines": lines});
            if let Some(out) = ctx.config().get("out").and_then(Value::as_str) {
                let name = item.rsplit('/').next().unwrap_or("object");
                ctx.put(&format!("{out}{name}.json"), summary.to_string()).map_err(e)?;
            }
            Some(summary)
        }
        other => return Err(format!("unknown command {other:?}")),
    })
}

#[wasmbatch_guest::handler]
fn handle(ctx: &Context, items: Vec<String>) -> Result<Vec<Value>> {
    let mut results = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match run(ctx, i, item) {
            Ok(Some(value)) => results.push(value),
            Ok(None) => {}
            Err(message) => ctx.fail_item(i, message),
        }
    }
    Ok(results)
}
