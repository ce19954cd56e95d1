//! A byte budget shared by threads: a blocking counting semaphore over bytes. The big-file
//! pipeline takes each chunk's length before handing it to the pool; restore workers take the
//! size of a pack read before the read. What they hold at once is bounded by the budget, not by
//! the number of threads.

use std::sync::{Arc, Condvar, Mutex};

/// Bytes that may be held at once.
pub(crate) struct ByteBudget {
    used: Mutex<u64>,
    freed: Condvar,
    limit: u64,
}

/// Bytes taken from a [`ByteBudget`]; given back when dropped (used, failed, or held by a
/// thread that panicked), so nobody waits forever.
pub(crate) struct Taken {
    budget: Arc<ByteBudget>,
    bytes: u64,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(ByteBudget {
            used: Mutex::new(0),
            freed: Condvar::new(),
            limit,
        })
    }

    /// Take `bytes`, waiting while others hold bytes and these would exceed the limit. With
    /// nothing held, any request goes (a larger one then runs alone rather than never).
    pub(crate) fn take(self: &Arc<Self>, bytes: u64) -> Taken {
        if bytes == 0 {
            // Nothing to hold: no lock, and nobody to wake when it is given back.
            return Taken {
                budget: self.clone(),
                bytes,
            };
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + bytes > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Taken {
            budget: self.clone(),
            bytes,
        }
    }

    /// Bytes taken now.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.bytes;
        drop(used);
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Many threads taking and giving back never hold more than the budget together, except
    /// one oversized request alone; it still gets through, and everything is given back.
    #[test]
    fn holders_never_exceed_the_budget() {
        let b = ByteBudget::new(100);
        // (bytes held, holders, the most bytes held by two or more, oversized ones served)
        let seen = Mutex::new((0u64, 0u32, 0u64, 0u32));
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (b, seen) = (&b, &seen);
                s.spawn(move || {
                    for i in 0..200u64 {
                        let n = [10, 30, 60, 250][((t + i) % 4) as usize];
                        let got = b.take(n);
                        {
                            let mut v = seen.lock().unwrap();
                            v.0 += n;
                            v.1 += 1;
                            if v.1 > 1 {
                                v.2 = v.2.max(v.0);
                            }
                            if n > 100 {
                                assert_eq!(v.1, 1, "an oversized request shares the budget");
                                v.3 += 1;
                            }
                        }
                        std::thread::yield_now();
                        let mut v = seen.lock().unwrap();
                        v.0 -= n;
                        v.1 -= 1;
                        drop(v);
                        drop(got);
                    }
                });
            }
        });
        let (_, _, shared_peak, oversized) = *seen.lock().unwrap();
        assert!((60..=100).contains(&shared_peak), "peak {shared_peak}");
        assert_eq!(oversized, 400);
        assert_eq!(b.in_use(), 0);
    }

    /// Taking nothing never waits, even with the budget full, and giving it back leaves the
    /// holders' bytes as they were.
    #[test]
    fn taking_nothing_never_waits() {
        let b = ByteBudget::new(100);
        let full = b.take(100);
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = b.clone();
        std::thread::spawn(move || {
            let none = b2.take(0);
            drop(none);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("a take of 0 bytes waited for a full budget");
        assert_eq!(b.in_use(), 100);
        drop(full);
        assert_eq!(b.in_use(), 0);
    }
}
