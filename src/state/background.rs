//! Work beside the reviews: background tasks that run while the server does, and CPU work
//! that must not slow reviews.

use std::future::Future;

/// Work that runs while the server does (watchers, the cluster feeds), stopped when it stops.
pub type BackgroundTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs CPU work that must not slow admission reviews (compiling a reloaded bundle, the audit)
/// on a thread of its own at a lower scheduling priority (nice 10): when the core is busy with
/// reviews, the kernel gives them precedence, and the work takes the idle time. The error is
/// the work's panic, as text.
pub async fn in_background<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("palisade-{name}"))
        .spawn(move || {
            lower_priority();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| format!("the {name} work panicked"))),
        Err(_) => Err(format!("the {name} thread ended without a result")),
    }
}

/// Nice 10 for the calling thread (on Linux a thread has its own nice value). Best effort: a
/// failure leaves the thread at the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(None, 10) {
        tracing::debug!(%error, "background work runs at the normal priority");
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn background_work_returns_its_value_or_its_panic() {
        assert_eq!(super::in_background("t", || 6 * 7).await, Ok(42));
        let err = super::in_background("t", || -> u8 { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(err, "boom");
    }
}
