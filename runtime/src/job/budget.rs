//! A global worker budget shared by several jobs, handed out fairly.
//!
//! Each job worker takes one place before each batch and gives it back after. Places
//! go in arrival order, so a worker that just finished a batch queues behind the
//! workers of every other job already waiting: a big job cannot starve a small one
//! submitted after it, and each job still gets up to its own `workers` at once.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::stop::StopFlag;

/// The budget: `total` places.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<State>,
    wake: Condvar,
    total: usize,
}

#[derive(Debug)]
struct State {
    free: usize,
    waiting: VecDeque<u64>,
    next_ticket: u64,
}

/// One place, given back on drop.
#[derive(Debug)]
pub struct Place(Arc<Budget>);

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.free += 1;
        if !state.waiting.is_empty() {
            self.0.wake.notify_all();
        }
    }
}

impl Budget {
    /// A budget of `total` places (at least 1).
    pub fn new(total: usize) -> Arc<Budget> {
        let total = total.max(1);
        Arc::new(Budget {
            state: Mutex::new(State { free: total, waiting: VecDeque::new(), next_ticket: 0 }),
            wake: Condvar::new(),
            total,
        })
    }

    /// Places in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Places taken now.
    pub fn in_use(&self) -> usize {
        self.total - self.state.lock().unwrap_or_else(|e| e.into_inner()).free
    }

    /// Waits for a place in arrival order; `None` once `stop` is set.
    pub fn acquire(self: &Arc<Self>, stop: &StopFlag) -> Option<Place> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody waiting and a place free: take it (the common case, no queue, no wake-up).
        if state.waiting.is_empty() && state.free > 0 {
            state.free -= 1;
            return Some(Place(self.clone()));
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(ticket);
        loop {
            if state.waiting.front() == Some(&ticket) && state.free > 0 {
                state.waiting.pop_front();
                state.free -= 1;
                // The next in line may be able to go too.
                if state.free > 0 && !state.waiting.is_empty() {
                    self.wake.notify_all();
                }
                return Some(Place(self.clone()));
            }
            if stop.is_set() {
                state.waiting.retain(|t| *t != ticket);
                self.wake.notify_all();
                return None;
            }
            // A stop does not signal this condvar: look again every 50 ms.
            state = self.wake.wait_timeout(state, Duration::from_millis(50)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_and_handed_out_in_arrival_order() {
        let budget = Budget::new(1);
        let stop = StopFlag::default();
        let first = budget.acquire(&stop).unwrap();
        assert_eq!(budget.in_use(), 1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiters: Vec<_> = (0..3)
            .map(|i| {
                let (waiter, stop, order) = (budget.clone(), stop.clone(), order.clone());
                let handle = std::thread::spawn(move || {
                    let place = waiter.acquire(&stop).unwrap();
                    order.lock().unwrap().push(i);
                    drop(place);
                });
                // Queue them one after the other.
                while budget.state.lock().unwrap().waiting.len() < i + 1 {
                    std::thread::yield_now();
                }
                handle
            })
            .collect();
        drop(first);
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_stop_ends_the_wait() {
        let budget = Budget::new(1);
        let stop = StopFlag::default();
        let _held = budget.acquire(&stop).unwrap();
        let waiter = {
            let (budget, stop) = (budget.clone(), stop.clone());
            std::thread::spawn(move || budget.acquire(&stop).is_none())
        };
        stop.stop();
        assert!(waiter.join().unwrap());
    }
}
