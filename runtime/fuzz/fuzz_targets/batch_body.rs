//! The request-body checks of `serve`: `check_batch` agrees with a full JSON parse,
//! item by item (each item's offsets delimit exactly that item's JSON), and
//! `normalize_completion` always yields an object with a `message`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmbatch::http::batch::{check_batch, normalize_completion};

/// Whether `data` escapes a leading surrogate (`\uD800`–`\uDBFF`): serde_json refuses
/// one not followed by a trailing one's escape ("unexpected end of hex escape" for
/// `"\ud800x"`), where the JSON grammar allows any `\uXXXX`.
fn escapes_a_leading_surrogate(data: &[u8]) -> bool {
    data.windows(4)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && w[2].eq_ignore_ascii_case(&b'd') && b"89abAB".contains(&w[3]))
}

fuzz_target!(|data: &[u8]| {
    let full = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(value) => Some(value),
        // Valid JSON that an f64 cannot hold (`1e999`), or a string escaping half a
        // surrogate pair (`"\udcce"`, `"\ud800x"`: the JSON grammar allows them): the
        // check accepts it rightly, the `Value` oracle cannot say.
        Err(e)
            if e.to_string().starts_with("number out of range")
                || e.to_string().contains("surrogate")
                || (e.to_string().starts_with("unexpected end of hex escape") && escapes_a_leading_surrogate(data)) =>
        {
            return;
        }
        Err(_) => None,
    };
    match check_batch(data) {
        Ok(items) => {
            let array = full.as_ref().and_then(|v| v.as_array()).expect("accepted bodies are arrays");
            assert_eq!(array.len(), items.len());
            for (i, value) in array.iter().enumerate() {
                let span = items.get(i).expect("an offset pair per item");
                let item: serde_json::Value =
                    serde_json::from_slice(&data[span]).expect("an item's bytes are its JSON");
                assert_eq!(&item, value, "item {i}");
            }
        }
        Err(_) => assert!(!full.as_ref().is_some_and(|v| v.is_array()), "a JSON array was refused"),
    }
    if let Ok(body) = normalize_completion(data) {
        let value: serde_json::Value = serde_json::from_slice(&body).expect("normalized bodies are JSON");
        assert!(value.get("message").is_some());
    }
});
