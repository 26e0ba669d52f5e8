//! Where a batch's items lie: found by the one scan that checks a batch is a JSON
//! array, and handed with the batch to a guest that exports `wasmbatch_handle_items`,
//! so that it parses each item from its own bytes instead of scanning the array again
//! (`docs/abi.md`).

use std::ops::Range;

use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The items of one batch: each one's start and end offset in the batch's bytes,
/// kept as the guest reads them (pairs of little-endian `u32`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemSpans {
    encoded: Vec<u8>,
}

impl ItemSpans {
    /// Scans `text`, which must be one JSON array and nothing else (whitespace aside),
    /// checking each item as JSON; the error is serde's.
    pub fn scan(text: &str) -> Result<ItemSpans, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let spans = Scan(text).deserialize(&mut de)?;
        de.end()?;
        Ok(spans)
    }

    /// Offsets noted while building a batch, `capacity` items expected.
    pub(crate) fn with_capacity(capacity: usize) -> ItemSpans {
        ItemSpans { encoded: Vec::with_capacity(capacity * 8) }
    }

    /// Notes the next item at `start..end`; `false` (nothing noted) when an offset
    /// does not fit the ABI's `u32`.
    pub(crate) fn push(&mut self, start: usize, end: usize) -> bool {
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else { return false };
        self.encoded.extend(start.to_le_bytes());
        self.encoded.extend(end.to_le_bytes());
        true
    }

    /// How many items the batch has.
    pub fn len(&self) -> usize {
        self.encoded.len() / 8
    }

    /// Whether the batch is `[]`.
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    /// Where item `index` lies.
    pub fn get(&self, index: usize) -> Option<Range<usize>> {
        let pair = self.encoded.get(index * 8..index * 8 + 8)?;
        let word = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        Some(word(&pair[..4])..word(&pair[4..]))
    }

    /// The offsets as the guest reads them.
    pub(crate) fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

/// The scan: a sequence visitor that keeps where each element's raw text lies.
struct Scan<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for Scan<'de> {
    type Value = ItemSpans;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<ItemSpans, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Scan<'de> {
    type Value = ItemSpans;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ItemSpans, A::Error> {
        let base = self.0.as_ptr() as usize;
        let mut spans = ItemSpans::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            let start = item.get().as_ptr() as usize - base;
            if !spans.push(start, start + item.get().len()) {
                return Err(A::Error::custom("the batch is over 4 GiB, past the ABI's offsets"));
            }
        }
        Ok(spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_item_is_found_where_it_lies() {
        let text = r#" [ 1 , {"a": [2, "]"]}, "x\"y" ,null]"#;
        let spans = ItemSpans::scan(text).unwrap();
        let items: Vec<&str> = (0..spans.len()).map(|i| &text[spans.get(i).unwrap()]).collect();
        assert_eq!(items, ["1", r#"{"a": [2, "]"]}"#, r#""x\"y""#, "null"]);
        assert!(spans.get(4).is_none());
        assert_eq!(spans.encoded().len(), 32);
        assert!(ItemSpans::scan("[]").unwrap().is_empty());
    }

    #[test]
    fn anything_but_one_array_is_refused() {
        for text in ["{}", "1", "", "[1,]", "[1] [2]", "[1", "[tru]"] {
            assert!(ItemSpans::scan(text).is_err(), "{text}");
        }
    }
}
