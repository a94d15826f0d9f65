//! The Fly leases this process holds, in one registry that outlives the deploy's future: a
//! cancelled job (SIGTERM/SIGINT) releases them before it exits, whether the deploy ran
//! alone (`flightplan deploy`, `rollback`) or inside `run`, whose interrupt path drops the
//! phases' future mid-request. Without it every lease stayed held until its TTL ran out.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::join_all;

use super::fly::Machines;
use crate::error::Error;

/// How long the release on a signal may take: GitHub kills a cancelled job's process
/// about 7.5 s after SIGINT; a lease not released by then expires by itself.
pub const RELEASE_WITHIN: Duration = Duration::from_secs(5);

/// One lease: the app's endpoints, the machine, our nonce.
struct Held {
    api: Machines,
    id: String,
    nonce: String,
}

static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<Held>> {
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records (or updates, after a refresh) a lease this process holds.
pub fn hold(api: &Machines, id: &str, nonce: &str) {
    let mut held = held();
    match held
        .iter_mut()
        .find(|h| h.id == id && h.api.app() == api.app())
    {
        Some(h) => h.nonce = nonce.to_string(),
        None => held.push(Held {
            api: api.clone(),
            id: id.to_string(),
            nonce: nonce.to_string(),
        }),
    }
}

/// Forgets a lease that was released (or found expired).
pub fn forget(app: &str, id: &str) {
    held().retain(|h| !(h.id == id && h.api.app() == app));
}

/// How many leases this process holds now.
pub fn count() -> usize {
    held().len()
}

/// Releases every lease still held, concurrently, within `within`; returns how many were
/// released. What is not released in time expires with its TTL.
pub async fn release_all(within: Duration) -> usize {
    let todo: Vec<(Machines, String, String)> = held()
        .iter()
        .map(|h| (h.api.clone(), h.id.clone(), h.nonce.clone()))
        .collect();
    if todo.is_empty() {
        return 0;
    }
    tracing::warn!(
        "interrupted: releasing {} machine lease(s) before exiting",
        todo.len()
    );
    let releases = join_all(todo.iter().map(|(api, id, nonce)| async move {
        match api.release_lease(id, nonce).await {
            Ok(()) => {
                forget(api.app(), id);
                true
            }
            Err(e) => {
                tracing::warn!("machine {id}: releasing the lease failed: {}", e.message);
                false
            }
        }
    }));
    match tokio::time::timeout(within, releases).await {
        Ok(done) => done.into_iter().filter(|ok| *ok).count(),
        Err(_) => {
            let left = count();
            tracing::warn!(
                "{left} lease(s) not released within {}s; they expire by themselves",
                within.as_secs()
            );
            todo.len().saturating_sub(left)
        }
    }
}

/// Runs a deploy or rollback command; on SIGTERM/SIGINT it is dropped, its leases are
/// released, and it ends as a failure saying so (the machines keep whatever image they
/// had reached).
pub async fn interruptible<T>(work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::select! {
        biased;
        _ = crate::signal::cancelled() => {
            let released = release_all(RELEASE_WITHIN).await;
            Err(Error::failure(format!(
                "interrupted (SIGTERM/SIGINT); {released} machine lease(s) released"
            ))
            .hint(
                "machines already updated keep their new image: run the deploy again to finish \
                 it, or `flightplan rollback` to put each machine back on its previous image",
            ))
        }
        out = work => out,
    }
}
