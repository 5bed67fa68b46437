//! Admission to password hashing. Hashes run a few at a time; without a
//! bound, a burst of logins queues behind them and every login waits for
//! the whole burst. Beyond the bound a login is refused at once (the caller
//! answers 503 with `Retry-After`), and one address holds at most its share
//! of the places, so it cannot fill the queue for everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

pub struct HashQueue {
    capacity: usize,
    per_address: usize,
    queued: Mutex<Queued>,
}

#[derive(Default)]
struct Queued {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A login's place in the queue, from before its hash is waited for until
/// it is done; dropping it frees the place.
pub struct QueuePlace<'a> {
    queue: &'a HashQueue,
    address: IpAddr,
}

impl HashQueue {
    /// At most `capacity` logins waiting for or in a hash, at most
    /// `per_address` of them from one address.
    pub fn new(capacity: usize, per_address: usize) -> Self {
        Self {
            capacity,
            per_address,
            queued: Mutex::default(),
        }
    }

    fn queued(&self) -> MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a login from `address`, or `None` when the queue is full
    /// or the address has its share.
    pub fn enter(&self, address: IpAddr) -> Option<QueuePlace<'_>> {
        let mut queued = self.queued();
        if queued.total >= self.capacity {
            return None;
        }
        let mine = queued.by_address.entry(address).or_default();
        if *mine >= self.per_address {
            return None;
        }
        *mine += 1;
        queued.total += 1;
        Some(QueuePlace { queue: self, address })
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        let mut queued = self.queue.queued();
        queued.total -= 1;
        if let Some(mine) = queued.by_address.get_mut(&self.address) {
            *mine -= 1;
            if *mine == 0 {
                queued.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_in_all_and_per_address() {
        let q = HashQueue::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let first = q.enter(a);
        let second = q.enter(a);
        assert!(first.is_some() && second.is_some());
        assert!(q.enter(a).is_none(), "a's share is taken");
        let third = q.enter(b);
        assert!(third.is_some());
        assert!(q.enter(b).is_none(), "the queue is full");
        drop(first);
        assert!(q.enter(b).is_some());
        drop((second, third));
        assert_eq!(q.queued().total, 0);
        assert!(q.queued().by_address.is_empty());
    }
}
