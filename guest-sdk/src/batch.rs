//! A batch as a handler receives it — typed items (`Vec<T>`) or [`Items`], the raw
//! items read when asked — and the [`Handler`] trait that tells the signatures apart.
//!
//! The host scans every batch once, to check that it is a JSON array. A host that knows
//! where each item lies hands the offsets over with the batch (`wasmbatch_handle_items`
//! in `docs/abi.md`); the SDK then parses each item from its own bytes, with no second
//! pass over the array, and a handler taking [`Items`] parses nothing it does not ask
//! for.

use std::marker::PhantomData;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::{Context, Error, Output, Result, with_state};

/// A batch's bytes and, when the host gave them, where its items lie: 8 bytes an item,
/// the start and end offsets as little-endian `u32`.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct RawBatch<'b> {
    bytes: &'b [u8],
    spans: Option<&'b [u8]>,
}

impl<'b> RawBatch<'b> {
    /// A batch without offsets (ABI v1's `wasmbatch_handle`).
    pub(crate) fn whole(bytes: &'b [u8]) -> RawBatch<'b> {
        RawBatch { bytes, spans: None }
    }

    /// A batch with the host's offsets (`wasmbatch_handle_items`).
    pub(crate) fn with_spans(bytes: &'b [u8], spans: &'b [u8]) -> RawBatch<'b> {
        RawBatch { bytes, spans: Some(spans) }
    }
}

/// A batch's items, unparsed: each is the JSON text of one element of the batch's
/// array, read (and parsed, to any `T`) only when the handler asks.
///
/// A handler taking `Items<'_>` instead of `Vec<T>` pays nothing for items it does not
/// look at, and can parse each to a type of its choosing:
///
/// ```no_run
/// use wasmbatch_guest::{Context, Items, Result};
///
/// #[wasmbatch_guest::handler]
/// fn handle(_ctx: &Context, items: Items<'_>) -> Result<Vec<usize>> {
///     // The size of every item, without building any of them.
///     Ok(items.iter().map(|item| item.bytes().len()).collect())
/// }
/// ```
#[derive(Clone)]
pub struct Items<'b> {
    bytes: &'b [u8],
    spans: Spans<'b>,
}

#[derive(Clone)]
enum Spans<'b> {
    /// The host's, as it passed them.
    Host(&'b [u8]),
    /// Found by the SDK's own scan (a host that passed none).
    Own(Vec<Range<usize>>),
}

/// One item of a batch: its position and its JSON text.
#[derive(Clone, Copy, Debug)]
pub struct Item<'b> {
    index: usize,
    bytes: &'b [u8],
}

impl<'b> Items<'b> {
    /// The items of `batch`: the host's offsets checked, or found by one scan.
    fn new(batch: RawBatch<'b>) -> Result<Items<'b>> {
        let spans = match batch.spans {
            Some(spans) => {
                let fits = spans.len() % 8 == 0
                    && spans.chunks_exact(8).all(|pair| {
                        let (start, end) = decode(pair);
                        start <= end && end <= batch.bytes.len()
                    });
                if !fits {
                    return Err(Error::msg("the host passed item offsets outside the batch"));
                }
                Spans::Host(spans)
            }
            None => Spans::Own(scan(batch.bytes)?),
        };
        Ok(Items { bytes: batch.bytes, spans })
    }

    /// How many items the batch has.
    pub fn len(&self) -> usize {
        match &self.spans {
            Spans::Host(spans) => spans.len() / 8,
            Spans::Own(spans) => spans.len(),
        }
    }

    /// Whether the batch is `[]`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item `index`, from 0.
    pub fn get(&self, index: usize) -> Option<Item<'b>> {
        let range = match &self.spans {
            Spans::Host(spans) => {
                let (start, end) = decode(spans.get(index * 8..index * 8 + 8)?);
                start..end
            }
            Spans::Own(spans) => spans.get(index)?.clone(),
        };
        Some(Item { index, bytes: &self.bytes[range] })
    }

    /// The items in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Item<'b>> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("an index below len()"))
    }

    /// Every item as `T`; the first that does not fit is named by its index
    /// (`invalid_input`).
    pub fn parse<T: Deserialize<'b>>(&self) -> Result<Vec<T>> {
        self.iter().map(|item| item.parse()).collect()
    }
}

impl<'b> Item<'b> {
    /// Its position in the batch, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its JSON text, as bytes.
    pub fn bytes(&self) -> &'b [u8] {
        self.bytes
    }

    /// Its JSON text (`invalid_input` if it is not UTF-8, which a host that checked the
    /// batch never passes).
    pub fn text(&self) -> Result<&'b str> {
        std::str::from_utf8(self.bytes)
            .map_err(|e| Error::invalid_input(format!("item {} is not UTF-8: {e}", self.index)))
    }

    /// The item as `T` (`invalid_input`, naming the item, if it does not fit).
    pub fn parse<T: Deserialize<'b>>(&self) -> Result<T> {
        serde_json::from_slice(self.bytes).map_err(|e| {
            Error::invalid_input(format!("item {} does not match the handler's item type: {e}", self.index))
        })
    }
}

fn decode(pair: &[u8]) -> (usize, usize) {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    (word(&pair[..4]), word(&pair[4..8]))
}

/// Where each item of the JSON array `bytes` lies (the SDK's own scan).
fn scan(bytes: &[u8]) -> Result<Vec<Range<usize>>> {
    struct Seed<'b>(&'b [u8]);
    impl<'de> DeserializeSeed<'de> for Seed<'de> {
        type Value = Vec<Range<usize>>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Seed<'de> {
        type Value = Vec<Range<usize>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
            let base = self.0.as_ptr() as usize;
            let mut spans = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                let start = item.get().as_ptr() as usize - base;
                spans.push(start..start + item.get().len());
            }
            Ok(spans)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let spans = Seed(bytes)
        .deserialize(&mut de)
        .and_then(|spans| de.end().map(|()| spans))
        .map_err(|e| Error::invalid_input(format!("batch is not a JSON array: {e}")))?;
    Ok(spans)
}

/// The batch's items as `T`; an item that does not fit is named by its index.
fn typed<'b, T: Deserialize<'b>>(batch: RawBatch<'b>) -> Result<Vec<T>> {
    if batch.spans.is_some() {
        // Each item from its own bytes: the host already found them.
        return Items::new(batch)?.parse();
    }
    serde_json::from_slice(batch.bytes).map_err(|whole| {
        // The slow path, only for a batch that does not fit: which item is wrong?
        match Items::new(batch) {
            Err(_) => Error::invalid_input(format!("batch is not a JSON array: {whole}")),
            Ok(items) => match items.iter().find_map(|item| item.parse::<T>().err()) {
                Some(e) => e,
                None => Error::invalid_input(format!("batch does not match the handler's item type: {whole}")),
            },
        }
    })
}

/// A batch handler: `fn(&Context, Vec<T>) -> Result<O>`, `fn(&Context, Items) ->
/// Result<O>`, or either with `&mut S` after the context, where `O` is `()` or `Vec<R>`
/// of results ([`Output`]). Implemented for such functions; the marker type tells them
/// apart. `'b` is the batch's lifetime: items may borrow from it (`&'b str`,
/// `Cow<'b, str>` with `#[serde(borrow)]`) instead of copying their strings.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a batch handler",
    label = "this function's signature is not one a handler may have",
    note = "a handler is `fn(ctx: &Context, items: Vec<T>) -> Result<O>` or `fn(ctx: &Context, state: &mut S, \
            items: Vec<T>) -> Result<O>`, where T: Deserialize (one batch item), S is the type #[init] returns, \
            and O is `()` or `Vec<R>` with R: Serialize (results); `Items<'_>` in place of `Vec<T>` gets the \
            items unparsed",
    note = "check the order of the parameters, that the context is borrowed (`&Context`), and that the items \
            are a `Vec` or `Items`"
)]
pub trait Handler<'b, Marker> {
    /// Deserializes the batch and calls the function.
    fn call(self, ctx: &Context<'_>, batch: RawBatch<'b>) -> Result<()>;
}

/// Marks a handler without state.
pub struct Stateless<T>(PhantomData<T>);
/// Marks a handler with state `S`.
pub struct Stateful<S, T>(PhantomData<(S, T)>);
/// Marks a handler of [`Items`] without state.
pub struct Unparsed<O>(PhantomData<O>);
/// Marks a handler of [`Items`] with state `S`.
pub struct UnparsedStateful<S, O>(PhantomData<(S, O)>);

impl<'b, F, T, O> Handler<'b, Stateless<(T, O)>> for F
where
    F: FnOnce(&Context<'_>, Vec<T>) -> Result<O>,
    T: Deserialize<'b>,
    O: Output,
{
    fn call(self, ctx: &Context<'_>, batch: RawBatch<'b>) -> Result<()> {
        let items = typed(batch)?;
        self(ctx, items)?.emit(ctx)
    }
}

impl<'b, F, S, T, O> Handler<'b, Stateful<S, (T, O)>> for F
where
    F: FnOnce(&Context<'_>, &mut S, Vec<T>) -> Result<O>,
    S: 'static,
    T: Deserialize<'b>,
    O: Output,
{
    fn call(self, ctx: &Context<'_>, batch: RawBatch<'b>) -> Result<()> {
        let items = typed(batch)?;
        with_state(|state: &mut S| self(ctx, state, items))?.emit(ctx)
    }
}

impl<'b, F, O> Handler<'b, Unparsed<O>> for F
where
    F: FnOnce(&Context<'_>, Items<'b>) -> Result<O>,
    O: Output,
{
    fn call(self, ctx: &Context<'_>, batch: RawBatch<'b>) -> Result<()> {
        let items = Items::new(batch)?;
        self(ctx, items)?.emit(ctx)
    }
}

impl<'b, F, S, O> Handler<'b, UnparsedStateful<S, O>> for F
where
    F: FnOnce(&Context<'_>, &mut S, Items<'b>) -> Result<O>,
    S: 'static,
    O: Output,
{
    fn call(self, ctx: &Context<'_>, batch: RawBatch<'b>) -> Result<()> {
        let items = Items::new(batch)?;
        with_state(|state: &mut S| self(ctx, state, items))?.emit(ctx)
    }
}
