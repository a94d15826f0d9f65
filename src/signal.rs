//! The one place a cancelled job is noticed: a future that resolves on SIGTERM or SIGINT
//! (what a CI cancellation sends), for every command that must clean up before it exits.

/// Resolves on SIGTERM or SIGINT. Once it has been polled the process no longer dies of
/// these signals by default: the caller owns the exit.
pub async fn cancelled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
