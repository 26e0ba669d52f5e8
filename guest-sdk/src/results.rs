//! The job's results, read in on-job-complete: what every handler of the job emitted
//! (with [`Context::emit`], or returned), each batch's exactly once (a retried or
//! redelivered batch's results are kept from one attempt only), whichever instance,
//! worker or server handled it. Adding them up gives a job-wide total that is right
//! whatever the number of workers.

use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Context, Error, Result, sys};

impl Context<'_> {
    /// The job's results, typed, one at a time, in on-job-complete:
    ///
    /// ```no_run
    /// use wasmbatch_guest::{Context, JobComplete, Result};
    ///
    /// #[wasmbatch_guest::on_job_complete]
    /// fn total(ctx: &Context, _done: &JobComplete) -> Result<()> {
    ///     let mut words = 0u64;
    ///     for count in ctx.results::<u64>()? {
    ///         words += count?;
    ///     }
    ///     std::fs::write(format!("/mnt/{}/total.json", ctx.job_id()), words.to_string())?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// Each call starts again from the first result (an iterator of an earlier call
    /// then goes on from where the new one is: read one at a time). They are streamed
    /// from the host, not loaded into the guest's memory at once. A result that is not a `T` is an
    /// error of its own (the iteration may go on). Where the results cannot be read —
    /// in a handler, or under `serve` when the job service at `--operator-url` does not
    /// know the job — this is an error with the host's reason.
    pub fn results<T: DeserializeOwned>(&self) -> Result<Results<T>> {
        sys::results_open().map_err(|e| Error::msg(format!("the job's results: {e}")))?;
        Ok(Results { done: false, _type: PhantomData })
    }
}

/// The job's results as `T`s ([`Context::results`]); see [`Results::with_batches`] for
/// the batch each came from.
#[must_use = "results are read only when iterated"]
pub struct Results<T> {
    done: bool,
    _type: PhantomData<fn() -> T>,
}

#[derive(Deserialize)]
struct Line<T> {
    batch: u64,
    result: T,
}

impl<T: DeserializeOwned> Results<T> {
    /// Each result with the index of the batch that emitted it (from 0, in the job's
    /// order; not the order results come in).
    pub fn with_batches(self) -> impl Iterator<Item = Result<(u64, T)>> {
        let mut results = self;
        std::iter::from_fn(move || results.next_line())
    }

    fn next_line(&mut self) -> Option<Result<(u64, T)>> {
        if self.done {
            return None;
        }
        match sys::results_next() {
            Ok(Some(line)) => Some(
                serde_json::from_slice::<Line<T>>(&line)
                    .map(|l| (l.batch, l.result))
                    .map_err(|e| Error::msg(format!("a result of the job does not fit the type: {e}"))),
            ),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(Error::msg(format!("reading the job's results: {e}"))))
            }
        }
    }
}

impl<T: DeserializeOwned> Iterator for Results<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        self.next_line().map(|r| r.map(|(_, value)| value))
    }
}
