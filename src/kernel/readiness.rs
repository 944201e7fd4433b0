//! Readiness from the watches' first complete lists.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `on_zero` once, when `n` distinct parties have each called their `once()` handle
/// (a handle's later calls do not count again: watches re-list after every reconnect).
pub struct Countdown {
    remaining: Arc<AtomicUsize>,
    on_zero: Arc<dyn Fn() + Send + Sync>,
}

impl Countdown {
    pub fn new(n: usize, on_zero: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            remaining: Arc::new(AtomicUsize::new(n)),
            on_zero: Arc::new(on_zero),
        }
    }

    pub fn once(&self) -> impl Fn() + Send + Sync + 'static {
        let (remaining, on_zero) = (self.remaining.clone(), self.on_zero.clone());
        let counted = AtomicBool::new(false);
        move || {
            if !counted.swap(true, Ordering::SeqCst)
                && remaining.fetch_sub(1, Ordering::SeqCst) == 1
            {
                on_zero();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Countdown;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn fires_once_when_every_party_has_counted_once() {
        let fired = Arc::new(AtomicUsize::new(0));
        let seen = fired.clone();
        let countdown = Countdown::new(2, move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        let (a, b) = (countdown.once(), countdown.once());
        a();
        a(); // a relist: the same party again
        assert_eq!(fired.load(Ordering::SeqCst), 0);
        b();
        b();
        assert_eq!(fired.load(Ordering::SeqCst), 1);
    }
}
