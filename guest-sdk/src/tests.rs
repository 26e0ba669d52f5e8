use super::*;

#[derive(Deserialize)]
struct Pair(u32, u32);

fn add(ctx: &Context, items: Vec<Pair>) -> Result<()> {
    if ctx.job_id() != "job-1" {
        bail!("wrong job id {}", ctx.job_id());
    }
    if items.iter().any(|p| p.0 + p.1 > 10) {
        invalid!("sum over 10");
    }
    Ok(())
}

/// Copies `text` into a buffer from `alloc`, as the host does.
fn put(text: &str) -> (*mut u8, usize) {
    let ptr = __private::alloc(text.len());
    // SAFETY: just allocated with this length.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), ptr, text.len()) };
    (ptr, text.len())
}

fn call<M>(job: &str, batch: &str, handler: impl for<'b> Handler<'b, M>) -> i32 {
    let ((jp, jl), (bp, bl)) = (put(job), put(batch));
    // SAFETY: both buffers come from `alloc` with these lengths.
    unsafe { __private::handle(jp, jl, bp, bl, |ctx, batch| handler.call(ctx, batch)) }
}

fn init<S: 'static>(spec: &str, hook: impl FnOnce(&Context<'_>) -> Result<S>) -> i32 {
    let (p, l) = put(spec);
    // SAFETY: from `alloc` with this length.
    unsafe { __private::init(p, l, hook) }
}

#[test]
fn handle_maps_results_to_status_codes() {
    assert_eq!(call("job-1", "[[1,2],[3,4]]", add), status::OK);
    assert_eq!(call("job-1", "[[9,9]]", add), status::INVALID_INPUT);
    assert_eq!(take_error().as_deref(), Some("sum over 10"));
    assert_eq!(call("job-2", "[]", add), status::FAILED);
    assert_eq!(take_error().as_deref(), Some("wrong job id job-2"));
    assert_eq!(call("job-1", r#"[[1,2],"not a pair"]"#, add), status::INVALID_INPUT);
    let error = take_error().unwrap();
    assert!(error.starts_with("item 1 does not match the handler's item type: invalid type: string"), "{error}");
    assert_eq!(call("job-1", "{}", add), status::INVALID_INPUT);
    assert!(take_error().unwrap().starts_with("batch is not a JSON array"));
}

fn doubled(_ctx: &Context, items: Vec<u32>) -> Result<Vec<u32>> {
    Ok(items.iter().map(|i| i * 2).collect())
}

#[test]
fn a_handler_returns_results_and_fails_single_items() {
    assert_eq!(call("job-1", "[1,2]", doubled), status::OK);
    assert_eq!(crate::take_emitted(), vec![b"2".to_vec(), b"4".to_vec()]);
    let picky = |ctx: &Context, items: Vec<u32>| -> Result<()> {
        for (i, item) in items.iter().enumerate() {
            if item % 2 == 1 {
                ctx.fail_item(i, format!("{item} is odd"));
            }
        }
        Ok(())
    };
    assert_eq!(call("job-1", "[2,3,4,5]", picky), status::OK);
    assert_eq!(crate::take_item_errors(), vec![(1, "3 is odd".to_string()), (3, "5 is odd".to_string())]);
}

fn read_missing(_ctx: &Context, _items: Vec<Value>) -> Result<()> {
    let path = "/no/such/dir/model.bin";
    std::fs::read(path).with_context(|| format!("reading {path}"))?;
    Ok(())
}

fn anyhow_inside(_ctx: &Context, _items: Vec<Value>) -> Result<()> {
    fn helper() -> anyhow::Result<u32> {
        let n: u32 = "x".parse()?;
        Ok(n)
    }
    helper().map_err(|e| e.context("parsing the threshold"))?;
    Ok(())
}

fn marks_invalid(_ctx: &Context, items: Vec<Value>) -> Result<()> {
    let first = items.first().invalid_input()?;
    let _n: u64 = serde_json::from_value(first.clone()).context("the first item").invalid_input()?;
    Ok(())
}

#[test]
fn errors_from_std_anyhow_and_serde_keep_their_causes() {
    assert_eq!(call("j", "[1]", read_missing), status::FAILED);
    let message = take_error().unwrap();
    assert!(message.starts_with("reading /no/such/dir/model.bin: "), "{message}");
    assert!(message.contains("No such file"), "{message}");

    assert_eq!(call("j", "[1]", anyhow_inside), status::FAILED);
    assert_eq!(take_error().unwrap(), "parsing the threshold: invalid digit found in string");

    assert_eq!(call("j", "[]", marks_invalid), status::INVALID_INPUT);
    assert_eq!(take_error().unwrap(), "a required value is missing");
    assert_eq!(call("j", r#"["seven"]"#, marks_invalid), status::INVALID_INPUT);
    let message = take_error().unwrap();
    assert!(message.starts_with("the first item: invalid type: string"), "{message}");
    assert_eq!(call("j", "[7]", marks_invalid), status::OK);

    let error = Error::from(std::io::Error::other("disk on fire")).context("saving").into_invalid_input();
    assert_eq!((error.message().as_str(), error.is_invalid_input()), ("saving: disk on fire", true));
    assert!(error.as_anyhow().downcast_ref::<std::io::Error>().is_some());
}

#[test]
fn ensure_fails_unless_the_condition_holds() {
    fn check(n: u32) -> Result<()> {
        ensure!(n < 3, "{n} is too many");
        Ok(())
    }
    assert!(check(2).is_ok());
    assert_eq!(check(5).unwrap_err().message(), "5 is too many");
}

struct Counter {
    seen: usize,
}

fn count(_ctx: &Context, counter: &mut Counter, items: Vec<Value>) -> Result<()> {
    counter.seen += items.len();
    if counter.seen == 5 {
        bail!("seen {}", counter.seen);
    }
    Ok(())
}

fn count_at_the_end(_ctx: &Context, counter: &mut Counter, done: &JobComplete) -> Result<()> {
    bail!("{} items, {:?} batches", counter.seen, done.total)
}

#[test]
fn state_from_init_reaches_every_batch_and_the_completion_hook() {
    // No init yet on this thread: a clear message, not a crash.
    STATE.with(|cell| *cell.borrow_mut() = None);
    assert_eq!(call("j", "[1]", count), status::FAILED);
    let message = take_error().unwrap();
    assert!(message.contains("no init hook returned one") && message.contains("Counter"), "{message}");

    assert_eq!(init(r#"{"job_id":"j"}"#, |_| Ok(Counter { seen: 0 })), status::OK);
    assert_eq!(call("j", "[1,2]", count), status::OK);
    assert_eq!(call("j", "[3,4,5]", count), status::FAILED);
    assert_eq!(take_error().unwrap(), "seen 5");

    let (jp, jl) = put("j");
    let (bp, bl) = put(r#"{"message":"job_complete","total":2}"#);
    // SAFETY: from `alloc` with these lengths.
    let status = unsafe { __private::on_job_complete(jp, jl, bp, bl, count_at_the_end) };
    assert_eq!((status, take_error().unwrap().as_str()), (status::FAILED, "5 items, Some(2) batches"));

    // An init that returns another type is named.
    assert_eq!(init("{}", |_| Ok(7u8)), status::OK);
    assert_eq!(call("j", "[1]", count), status::FAILED);
    let message = take_error().unwrap();
    assert!(message.contains("returned a `u8`"), "{message}");
}

#[test]
fn the_batch_identity_is_given_to_tests_and_empty_outside_a_batch() {
    let spec = serde_json::json!({"job_id": "j"});
    let ctx = Context::for_batch("j", &spec, "17", 2);
    assert_eq!((ctx.batch_id(), ctx.attempt()), ("17", 2));
    let ctx = Context::new("j", &spec);
    assert_eq!((ctx.batch_id(), ctx.attempt()), ("", 0));
}

#[test]
fn job_complete_accepts_cortex_and_extended_bodies() {
    let plain: JobComplete = serde_json::from_str(r#"{"message":"job_complete"}"#).unwrap();
    assert_eq!(plain.total, None);
    let counted: JobComplete =
        serde_json::from_str(r#"{"message":"job_complete","job_id":"x","succeeded":3,"failed":1,"total":4}"#).unwrap();
    assert_eq!((counted.succeeded, counted.failed, counted.total), (Some(3), Some(1), Some(4)));
}

#[test]
fn config_comes_from_the_spec() {
    let spec = serde_json::json!({"job_id": "j", "config": {"limit": 5}});
    let ctx = Context::new("j", &spec);
    assert_eq!(ctx.config()["limit"], 5);
    #[derive(Deserialize)]
    struct Config {
        limit: u32,
    }
    assert_eq!(ctx.config_as::<Config>().unwrap().limit, 5);
    let empty = serde_json::json!({});
    assert!(Context::new("j", &empty).config().is_null());
}

#[derive(Deserialize)]
struct Doc<'a> {
    id: &'a str,
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
}

fn lengths(_ctx: &Context, docs: Vec<Doc<'_>>) -> Result<Vec<usize>> {
    Ok(docs.iter().map(|d| d.id.len() + d.text.len()).collect())
}

/// As the exports call a handler whose items borrow from the batch.
fn call_borrowing(batch: &str) -> i32 {
    let ((jp, jl), (bp, bl)) = (put("job-1"), put(batch));
    // SAFETY: both buffers come from `alloc` with these lengths.
    unsafe { __private::handle(jp, jl, bp, bl, |ctx, batch| Handler::call(lengths, ctx, batch)) }
}

#[test]
fn items_may_borrow_their_strings_from_the_batch() {
    assert_eq!(call_borrowing(r#"[{"id":"a","text":"xyz"},{"id":"bc","text":"q\"uote"}]"#), status::OK);
    assert_eq!(crate::take_emitted(), vec![b"4".to_vec(), b"8".to_vec()]);
    // A `&str` cannot hold a string with escapes; the item is named.
    assert_eq!(call_borrowing(r#"[{"id":"a","text":""},{"id":"b\n","text":""}]"#), status::INVALID_INPUT);
    let error = take_error().unwrap();
    assert!(error.starts_with("item 1 does not match the handler's item type"), "{error}");
}

#[test]
fn config_as_reads_a_missing_config_as_an_empty_object() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Settings {
        #[serde(default)]
        scale: u32,
    }
    let none = serde_json::json!({"job_id": "j"});
    assert_eq!(Context::new("j", &none).config_as::<Settings>().unwrap(), Settings { scale: 0 });
    let null = serde_json::json!({"config": null});
    assert_eq!(Context::new("j", &null).config_as::<Settings>().unwrap(), Settings { scale: 0 });
    let given = serde_json::json!({"config": {"scale": 3}});
    assert_eq!(Context::new("j", &given).config_as::<Settings>().unwrap(), Settings { scale: 3 });
    let wrong = serde_json::json!({"config": {"scale": "x"}});
    assert!(Context::new("j", &wrong).config_as::<Settings>().unwrap_err().to_string().contains("job config"));
}

#[test]
fn on_job_complete_reads_the_job_results_typed_and_again_from_the_start() {
    let spec = serde_json::json!({});
    let ctx = Context::new("j", &spec);
    crate::give_job_results([(0, serde_json::json!(2)), (0, serde_json::json!(3)), (4, serde_json::json!("x"))]);
    let read: Vec<std::result::Result<u64, String>> =
        ctx.results::<u64>().unwrap().map(|r| r.map_err(|e| e.message())).collect();
    assert_eq!(read[..2], [Ok(2), Ok(3)]);
    assert!(read[2].as_ref().unwrap_err().contains("does not fit the type"), "{read:?}");
    let indexed: Vec<(u64, serde_json::Value)> =
        ctx.results::<serde_json::Value>().unwrap().with_batches().map(|r| r.unwrap()).collect();
    assert_eq!(indexed.iter().map(|(b, _)| *b).collect::<Vec<_>>(), [0, 0, 4]);
}

/// As the host calls `wasmbatch_handle_items`: the batch, padding to 4, the offsets.
fn call_with_spans(
    batch: &str,
    spans: &[(u32, u32)],
    call: impl for<'b> FnOnce(&Context<'_>, RawBatch<'b>) -> Result<()>,
) -> i32 {
    let (jp, jl) = put("job-1");
    let len = __private::items_buffer_len(batch.len(), spans.len()).unwrap();
    let mut buffer = batch.as_bytes().to_vec();
    buffer.resize(batch.len().next_multiple_of(4), 0);
    for (start, end) in spans {
        buffer.extend(start.to_le_bytes());
        buffer.extend(end.to_le_bytes());
    }
    assert_eq!(buffer.len(), len);
    let ptr = __private::alloc(len);
    // SAFETY: just allocated with this length.
    unsafe { std::ptr::copy_nonoverlapping(buffer.as_ptr(), ptr, len) };
    // SAFETY: both buffers come from `alloc` with these lengths.
    unsafe { __private::handle_items(jp, jl, ptr, batch.len(), spans.len(), call) }
}

fn sizes(_ctx: &Context, items: Items<'_>) -> Result<Vec<usize>> {
    Ok(items.iter().map(|item| item.bytes().len()).collect())
}

#[test]
fn items_come_from_the_hosts_offsets_without_a_second_scan() {
    // Offsets the host found; the SDK takes them as they are (here: a batch whose bytes
    // between the items are not even JSON, which a scan would refuse).
    assert_eq!(
        call_with_spans("[1, 22 ,333]", &[(1, 2), (4, 6), (8, 11)], |c, b| Handler::call(sizes, c, b)),
        status::OK
    );
    assert_eq!(crate::take_emitted(), vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    // Typed items are parsed one by one from their offsets; a misfit is named.
    assert_eq!(call_with_spans("[[1,2],[3,4]]", &[(1, 6), (7, 12)], |c, b| Handler::call(add, c, b)), status::OK);
    assert_eq!(
        call_with_spans(r#"[[1,2],"x"]"#, &[(1, 6), (7, 10)], |c, b| Handler::call(add, c, b)),
        status::INVALID_INPUT
    );
    let error = take_error().unwrap();
    assert!(error.starts_with("item 1 does not match the handler's item type"), "{error}");
    // Borrowed strings work the same way.
    let batch = r#"[{"id":"a","text":"xyz"}]"#;
    assert_eq!(call_with_spans(batch, &[(1, batch.len() as u32 - 1)], |c, b| Handler::call(lengths, c, b)), status::OK);
    assert_eq!(crate::take_emitted(), vec![b"4".to_vec()]);
}

#[test]
fn offsets_outside_the_batch_fail_the_call_instead_of_reading_past_it() {
    assert_eq!(call_with_spans("[1]", &[(1, 9)], |c, b| Handler::call(sizes, c, b)), status::FAILED);
    assert_eq!(take_error().as_deref(), Some("the host passed item offsets outside the batch"));
    assert_eq!(call_with_spans("[1]", &[(2, 1)], |c, b| Handler::call(sizes, c, b)), status::FAILED);
    assert_eq!(call_with_spans("[1]", &[(u32::MAX, u32::MAX)], |c, b| Handler::call(sizes, c, b)), status::FAILED);
}

#[test]
fn items_without_offsets_are_found_by_one_scan() {
    assert_eq!(call("job-1", r#" [ {"a": [1, 2]} , "x\"y", 3 ] "#, sizes), status::OK);
    assert_eq!(crate::take_emitted(), vec![b"13".to_vec(), b"6".to_vec(), b"1".to_vec()]);
    assert_eq!(call("job-1", r#"{"a": 1}"#, sizes), status::INVALID_INPUT);
    let error = take_error().unwrap();
    assert!(error.starts_with("batch is not a JSON array"), "{error}");
    assert_eq!(call("job-1", "[1] x", sizes), status::INVALID_INPUT);
}

#[test]
fn items_parse_on_demand_to_any_type() {
    fn probe(ctx: &Context, items: Items<'_>) -> Result<()> {
        assert_eq!((items.len(), items.is_empty()), (3, false));
        assert_eq!(items.get(0).unwrap().parse::<u32>().unwrap(), 3);
        assert_eq!(items.get(1).unwrap().parse::<&str>().unwrap(), "x");
        assert_eq!(items.get(2).unwrap().text().unwrap(), r#"{"k": [1]}"#);
        assert_eq!(items.get(2).unwrap().index(), 2);
        assert!(items.get(3).is_none());
        let wrong = items.parse::<u32>().unwrap_err();
        assert!(wrong.is_invalid_input() && wrong.message().starts_with("item 1 does not match"), "{wrong}");
        ctx.emit(&items.len())
    }
    assert_eq!(call("job-1", r#"[3, "x", {"k": [1]}]"#, probe), status::OK);
    assert_eq!(crate::take_emitted(), vec![b"3".to_vec()]);
}
