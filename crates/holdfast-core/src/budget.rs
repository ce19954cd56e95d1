//! A byte budget shared by threads: a blocking counting semaphore over bytes. Restore workers
//! take the size of a read from it before the read and give it back when its data is written,
//! so the read buffers held at once are bounded by the budget, not by the number of workers
//! (32 for an object store, each with a ranged read of up to 8 MiB).

use std::sync::{Condvar, Mutex};

/// Bytes that may be held at once.
pub(crate) struct ByteBudget {
    total: u64,
    free: Mutex<u64>,
    freed: Condvar,
}

/// Bytes taken from a [`ByteBudget`]; given back when dropped.
pub(crate) struct Taken<'a> {
    budget: &'a ByteBudget,
    bytes: u64,
}

impl ByteBudget {
    /// A budget of `total` bytes (at least 1).
    pub(crate) fn new(total: u64) -> Self {
        let total = total.max(1);
        ByteBudget {
            total,
            free: Mutex::new(total),
            freed: Condvar::new(),
        }
    }

    /// Take `bytes`, waiting until they are free. A request larger than the whole budget takes
    /// all of it (it then runs alone rather than never).
    pub(crate) fn take(&self, bytes: u64) -> Taken<'_> {
        let bytes = bytes.min(self.total);
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free < bytes {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= bytes;
        Taken {
            budget: self,
            bytes,
        }
    }

    /// Bytes taken now.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> u64 {
        self.total - *self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut free = self.budget.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += self.bytes;
        drop(free);
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Many threads taking and giving back never hold more than the budget together, an
    /// oversized request still gets through, and everything is given back at the end.
    #[test]
    fn holders_never_exceed_the_budget() {
        let b = ByteBudget::new(100);
        let (held, peak) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (b, held, peak) = (&b, &held, &peak);
                s.spawn(move || {
                    for i in 0..200u64 {
                        let n = [10, 30, 60, 250][((t + i) % 4) as usize];
                        let got = b.take(n);
                        let now = held.fetch_add(n.min(100), Ordering::SeqCst) + n.min(100);
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        held.fetch_sub(n.min(100), Ordering::SeqCst);
                        drop(got);
                    }
                });
            }
        });
        let peak = peak.load(Ordering::SeqCst);
        assert!((60..=100).contains(&peak), "peak {peak}");
        assert_eq!(b.in_use(), 0);
    }
}
