//! One way to serve state that changes underneath: an immutable snapshot that readers take
//! without locking, replaced whole when a new one is built. The TLS configuration, the policy
//! bundle and the inventory all use it.
//!
//! A source that is re-read on a timer or a file-system event reloads through
//! [`HotSwap::reload`], which compares a fingerprint of the input first: unchanged input costs
//! nothing, and input already rejected is reported once, not at every poll, while the last good
//! snapshot keeps serving.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// What a reload attempt did.
#[derive(Debug)]
pub enum Reload<E> {
    /// The input is what is served, or what was already rejected.
    Unchanged,
    Reloaded,
    Rejected(E),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    served: Option<u64>,
    rejected: Option<u64>,
}

pub struct HotSwap<T> {
    current: ArcSwap<T>,
    seen: Mutex<Seen>,
}

impl<T> HotSwap<T> {
    /// Serves `value`, built from input with `fingerprint` (`None` for a value with no input,
    /// such as an empty inventory that a live feed fills).
    pub fn new(value: T, fingerprint: Option<u64>) -> Self {
        Self {
            current: ArcSwap::from_pointee(value),
            seen: Mutex::new(Seen {
                served: fingerprint,
                rejected: None,
            }),
        }
    }

    /// The snapshot to use now. It stays valid, unchanged, for as long as it is held.
    pub fn load(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Serves `value` from now on, for a source without input fingerprints (a live feed).
    pub fn set(&self, value: T) {
        self.current.store(Arc::new(value));
    }

    /// Builds and swaps in a new snapshot when `fingerprint` differs from what was served and
    /// from what was last rejected. A failed build leaves the served snapshot in place.
    pub fn reload<E>(&self, fingerprint: u64, build: impl FnOnce() -> Result<T, E>) -> Reload<E> {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.served == Some(fingerprint) {
                // Back to what is served: a change rejected since is no longer pending.
                seen.rejected = None;
                return Reload::Unchanged;
            }
            if seen.rejected == Some(fingerprint) {
                return Reload::Unchanged;
            }
        }
        let result = build();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(value) => {
                self.current.store(Arc::new(value));
                *seen = Seen {
                    served: Some(fingerprint),
                    rejected: None,
                };
                Reload::Reloaded
            }
            Err(error) => {
                seen.rejected = Some(fingerprint);
                Reload::Rejected(error)
            }
        }
    }

    /// Whether the input last seen is the one served (no rejected change pending).
    pub fn is_current(&self) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejected
            .is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_only_changed_input_and_keeps_the_last_good_value() {
        let swap = HotSwap::new(1, Some(10));
        let held = swap.load();
        assert!(matches!(
            swap.reload(10, || Ok::<_, ()>(99)),
            Reload::Unchanged
        ));
        assert!(matches!(
            swap.reload(11, || Err("bad")),
            Reload::Rejected("bad")
        ));
        assert!(!swap.is_current());
        assert_eq!(*swap.load(), 1, "the last good value keeps serving");
        let mut built = false;
        let again = swap.reload(11, || {
            built = true;
            Ok::<_, &str>(2)
        });
        assert!(matches!(again, Reload::Unchanged));
        assert!(!built, "rejected input is not built again");
        assert!(matches!(
            swap.reload(10, || Ok::<_, ()>(99)),
            Reload::Unchanged
        ));
        assert!(swap.is_current(), "the input went back to what is served");
        assert!(matches!(
            swap.reload(12, || Ok::<_, ()>(3)),
            Reload::Reloaded
        ));
        assert!(swap.is_current());
        assert_eq!(*swap.load(), 3);
        assert_eq!(*held, 1, "a snapshot taken earlier is unchanged");
    }
}
