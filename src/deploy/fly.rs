//! The Machines API endpoints a deploy needs (list, get, update, leases, `/wait`, health
//! checks), on top of the transport of `crate::fly`; the machine JSON as a deploy reads it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;
use crate::fly::{Call, Client, Repeat, Reply};
use crate::http::Policy;

/// The header that proves we hold a machine's lease (fly-go's `NonceHeader`).
pub const NONCE_HEADER: &str = "fly-machine-lease-nonce";

/// The metadata key every deploy writes: the image the machine ran before it. Rollback reads
/// it, so a fresh CI workspace with no files from the deploy can still go back.
pub const PREVIOUS_IMAGE_KEY: &str = "flightplan_previous_image";

/// Fly caps one `/wait` at 60 s (fly-go `proxyTimeoutThreshold`); longer waits loop.
const WAIT_CAP: Duration = Duration::from_secs(60);

/// Extra time the HTTP request of a `/wait` gets beyond the wait itself.
const WAIT_SLACK: Duration = Duration::from_secs(15);

/// Lease acquisition's retries: more of them than other calls get (a busy API must not cost
/// a deploy), within the deploy's deadline.
const LEASE_POLICY: Policy = Policy {
    min_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(4),
    max_times: 10,
    max_retry_after: Duration::from_secs(30),
};

/// Checks flaps adds for old flyctl versions; fly-go's `RemoveCompatChecks` drops them.
const COMPAT_CHECK_PREFIX: &str = "bg_deployments_compat";

/// A machine as `GET /v1/apps/{app}/machines[/{id}]` describes it. `config` stays raw JSON:
/// updates must send the whole config back, including fields flightplan does not know.
#[derive(Debug, Clone, Deserialize)]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub host_status: Option<String>,
    #[serde(default)]
    checks: Option<Vec<CheckStatus>>,
}

/// One health check's runtime status (`passing`, `warning` or `critical`).
#[derive(Debug, Clone, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub output: String,
}

/// A lease as Fly returns it (`{"status": "success", "data": {...}}`, fly-go's envelope; the
/// description documents a bare lease, which is read too).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Lease {
    #[serde(default)]
    pub nonce: String,
    #[serde(default)]
    pub owner: Option<String>,
    /// What the holder said it is doing; flightplan's own carry its run's claim.
    #[serde(default)]
    pub description: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl Lease {
    fn from_reply(reply: &Reply) -> Option<Lease> {
        let data = reply.body.get("data").unwrap_or(&reply.body);
        serde_json::from_value(data.clone()).ok()
    }

    /// `owner until 2026-05-14T10:41:08Z`, for messages.
    pub fn describe(&self) -> String {
        let owner = self.owner.as_deref().unwrap_or("an unknown holder");
        match self.expires_at {
            Some(t) => format!("{owner} until {}", unix_to_rfc3339(t)),
            None => owner.to_string(),
        }
    }
}

/// Why a lease could not be acquired.
pub enum LeaseRefused {
    /// Someone else holds it (HTTP 409): their lease, when Fly tells us, and Fly's message.
    Held {
        holder: Option<Lease>,
        message: String,
        request_id: Option<String>,
    },
    Failed(Error),
}

impl Machine {
    pub fn image(&self) -> Option<&str> {
        self.config.as_ref()?.get("image")?.as_str()
    }

    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.config.as_ref()?.get("metadata")?.get(key)?.as_str()
    }

    /// The process group, read as fly-go does (`fly_process_group`, else `process_group`).
    pub fn process_group(&self) -> Option<&str> {
        self.metadata("fly_process_group")
            .filter(|g| !g.is_empty())
            .or_else(|| self.metadata("process_group"))
    }

    /// Destroyed, release-command and console machines are not part of a deploy (flyctl's
    /// `ListActive`).
    pub fn is_deployable(&self) -> bool {
        let group = self.process_group().unwrap_or("");
        !matches!(self.state.as_str(), "destroyed" | "destroying")
            && !matches!(
                group,
                "fly_app_release_command" | "release_command" | "fly_app_console"
            )
    }

    /// A machine that is not running keeps not running after an update (flyctl updates
    /// such "cold" machines without starting them).
    pub fn is_running(&self) -> bool {
        !matches!(self.state.as_str(), "stopped" | "suspended")
    }

    /// Health checks in the config: top-level `checks` (a map) plus every service's `checks`.
    pub fn configured_checks(&self) -> usize {
        let Some(config) = &self.config else { return 0 };
        let top = config
            .get("checks")
            .and_then(Value::as_object)
            .map_or(0, serde_json::Map::len);
        let services = config
            .get("services")
            .and_then(Value::as_array)
            .map_or(0, |services| {
                services
                    .iter()
                    .filter_map(|s| s.get("checks").and_then(Value::as_array))
                    .map(Vec::len)
                    .sum()
            });
        top + services
    }

    /// Runtime check statuses, without flaps' compatibility checks.
    pub fn checks(&self) -> Vec<&CheckStatus> {
        self.checks
            .iter()
            .flatten()
            .filter(|c| !c.name.starts_with(COMPAT_CHECK_PREFIX))
            .collect()
    }

    /// Checks are reported (an empty list right after a start is not "all passing") and
    /// every one passes.
    pub fn checks_pass(&self) -> bool {
        let checks = self.checks();
        !checks.is_empty() && checks.iter().all(|c| c.status == "passing")
    }

    /// `name critical (output)` for each check that is not passing, for messages.
    pub fn describe_checks(&self) -> String {
        let checks = self.checks();
        if checks.is_empty() {
            return "no check has reported yet".into();
        }
        checks
            .iter()
            .map(|c| {
                let output: String = c.output.trim().chars().take(160).collect();
                if output.is_empty() {
                    format!("{} {}", c.name, c.status)
                } else {
                    format!("{} {} ({output})", c.name, c.status)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The Machines endpoints of one app.
#[derive(Clone)]
pub struct Machines {
    client: Client,
    app: String,
}

impl Machines {
    pub fn new(client: Client, app: String) -> Machines {
        Machines { client, app }
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    fn path<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut p = vec!["v1", "apps", self.app.as_str(), "machines"];
        p.extend_from_slice(rest);
        p
    }

    /// The deployable machines of a process group, in the API's order. The server-side
    /// metadata filter keeps the answer small; the same filter is applied here too, so an
    /// API that ignores the parameter cannot widen the deploy.
    pub async fn list(&self, group: &str) -> Result<Vec<Machine>, Error> {
        let call = Call::get(&self.path(&[])).query("metadata.fly_process_group", group);
        let reply = self.client.call(&call).await?;
        let machines: Vec<Machine> = parse(&reply, &call)?;
        Ok(machines
            .into_iter()
            .filter(|m| m.is_deployable() && m.process_group() == Some(group))
            .collect())
    }

    pub async fn get(&self, id: &str) -> Result<Machine, Error> {
        let call = Call::get(&self.path(&[id])).pass(StatusCode::NOT_FOUND);
        let reply = self.client.call(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(not_found(id, &self.app, &reply));
        }
        parse(&reply, &call)
    }

    /// `POST …/{id}/lease` without a nonce: the body `{ttl, description}` the description
    /// requires and `?ttl=` as fly-go sends it, so either reading gets the TTL.
    ///
    /// Retried until `deadline`: a 429 always (the rate limiter refused it before it ran);
    /// a 5xx, 408 or lost answer only after the holder check: the lease is looked up, and
    /// one held under `description` (unique to this run) is ours, taken by the attempt
    /// whose answer was lost. A 409 whose holder is ours is the same case.
    pub async fn acquire_lease(
        &self,
        id: &str,
        ttl: Duration,
        description: &str,
        deadline: Instant,
    ) -> Result<Lease, LeaseRefused> {
        let secs = ttl.as_secs().max(1);
        let call = Call::post(&self.path(&[id, "lease"]))
            .query("ttl", secs.to_string())
            .json(serde_json::json!({ "ttl": secs, "description": description }))
            .repeat(Repeat::Never)
            .pass(StatusCode::CONFLICT);
        let attempt = || async {
            match self.client.try_call(&call).await {
                Ok(reply) if reply.status == StatusCode::CONFLICT => {
                    let holder = self.find_lease(id).await.ok().flatten();
                    if let Some(l) = holder.as_ref().filter(|l| is_ours(l, description)) {
                        tracing::info!("machine {id}: the lease an earlier attempt took is ours");
                        return Ok(Ok(l.clone()));
                    }
                    Ok(Err(LeaseRefused::Held {
                        holder,
                        message: Client::message(&reply),
                        request_id: reply.request_id,
                    }))
                }
                Ok(reply) => lease_of(&reply, &call).map(Ok).map_err(crate::http::known),
                Err(mut f) if f.status == Some(StatusCode::TOO_MANY_REQUESTS) => {
                    f.retry = Some(f.retry_after);
                    Err(f)
                }
                Err(mut f)
                    if f.status.is_none_or(|s| {
                        s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT
                    }) =>
                {
                    // Ambiguous: the lease may have been granted. Look before asking again.
                    match self.find_lease(id).await {
                        Ok(Some(l)) if is_ours(&l, description) => {
                            tracing::info!(
                                "machine {id}: {}; the lease was granted all the same",
                                f.error.message
                            );
                            Ok(Ok(l))
                        }
                        Ok(Some(l)) => Ok(Err(LeaseRefused::Held {
                            message: f.error.message.clone(),
                            holder: Some(l),
                            request_id: f.error.request_id.take(),
                        })),
                        // Nobody holds it (or it cannot be seen): asking again is safe.
                        _ => {
                            f.retry = Some(None);
                            Err(f)
                        }
                    }
                }
                Err(f) => Err(f),
            }
        };
        match LEASE_POLICY.run(Some(deadline), attempt).await {
            Ok(outcome) => outcome,
            Err(f) => Err(LeaseRefused::Failed(f.error)),
        }
    }

    /// Extends our lease (`POST …/lease` with our nonce). Harmless to repeat. Each attempt
    /// gets a third of the TTL, so a hanging one is retried while the lease still holds.
    pub async fn refresh_lease(
        &self,
        id: &str,
        nonce: &str,
        ttl: Duration,
    ) -> Result<Lease, Error> {
        let secs = ttl.as_secs().max(1);
        let call = Call::post(&self.path(&[id, "lease"]))
            .query("ttl", secs.to_string())
            .json(serde_json::json!({ "ttl": secs }))
            .header(NONCE_HEADER, nonce)
            .timeout((ttl / 3).max(Duration::from_secs(1)))
            .repeat(Repeat::Idempotent);
        let reply = self.client.call(&call).await?;
        lease_of(&reply, &call)
    }

    /// Releases our lease. A lease that already expired is not an error (flyctl ignores
    /// `lease not found` too).
    pub async fn release_lease(&self, id: &str, nonce: &str) -> Result<(), Error> {
        let call = Call::delete(&self.path(&[id, "lease"]))
            .header(NONCE_HEADER, nonce)
            .repeat(Repeat::Idempotent)
            .pass(StatusCode::NOT_FOUND);
        self.client.call(&call).await.map(drop)
    }

    /// The current lease of a machine, if any.
    pub async fn find_lease(&self, id: &str) -> Result<Option<Lease>, Error> {
        let call = Call::get(&self.path(&[id, "lease"])).pass(StatusCode::NOT_FOUND);
        let reply = self.client.call(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Lease::from_reply(&reply))
    }

    /// `POST …/{id}` with the whole config (Fly has no partial updates). Retried on transient
    /// failures: the lease keeps anyone else from changing the machine in between, and
    /// sending the same config twice leaves the same result.
    pub async fn update(
        &self,
        id: &str,
        nonce: &str,
        config: &Value,
        skip_launch: bool,
    ) -> Result<Machine, Error> {
        let mut body = serde_json::json!({ "config": config });
        if skip_launch {
            body["skip_launch"] = Value::Bool(true);
        }
        let call = Call::post(&self.path(&[id]))
            .header(NONCE_HEADER, nonce)
            .json(body)
            .repeat(Repeat::Idempotent)
            .pass(StatusCode::NOT_FOUND);
        let reply = self.client.call(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(not_found(id, &self.app, &reply));
        }
        parse(&reply, &call)
    }

    /// `POST …/{id}/stop` under our lease (for a rollback that restores the database).
    pub async fn stop(&self, id: &str, nonce: &str) -> Result<(), Error> {
        let call = Call::post(&self.path(&[id, "stop"])).header(NONCE_HEADER, nonce);
        self.client.call(&call).await.map(drop)
    }

    /// `POST …/{id}/start` under our lease.
    pub async fn start(&self, id: &str, nonce: &str) -> Result<(), Error> {
        let call = Call::post(&self.path(&[id, "start"])).header(NONCE_HEADER, nonce);
        self.client.call(&call).await.map(drop)
    }

    /// Waits until the machine's instance reaches `state`, looping over `/wait` (each call
    /// at most 60 s, answered 408 when that passes) until `deadline`.
    pub async fn wait_for_state(
        &self,
        id: &str,
        instance_id: &str,
        state: &str,
        deadline: Instant,
    ) -> Result<(), Error> {
        let mut last = String::from("no answer yet");
        let mut last_request_id = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let mut e = Error::failure(format!(
                    "machine {id} did not reach state `{state}` in time (last answer: {last})"
                ))
                .hint(format!(
                    "see `fly logs -a {} --machine {id}`; raise [deploy] wait_timeout if it starts slowly",
                    self.app
                ));
                e.request_id = last_request_id;
                return Err(e);
            }
            let secs = left.min(WAIT_CAP).as_secs().max(1);
            // The docs name the parameter `instance_id`; fly-go sends the same value as
            // `version`. Both are sent so either reading waits for the new instance, not the
            // one being replaced.
            let mut call = Call::get(&self.path(&[id, "wait"])).query("state", state);
            if !instance_id.is_empty() {
                call = call
                    .query("instance_id", instance_id)
                    .query("version", instance_id);
            }
            let call = call
                .query("timeout", secs.to_string())
                .timeout(Duration::from_secs(secs) + WAIT_SLACK)
                .pass(StatusCode::REQUEST_TIMEOUT)
                .pass(StatusCode::NOT_FOUND);
            let reply = self.client.call(&call).await?;
            last_request_id.clone_from(&reply.request_id);
            match reply.status {
                s if s.is_success() => return Ok(()),
                StatusCode::REQUEST_TIMEOUT => {
                    last = Client::message(&reply);
                    tracing::debug!("machine {id}: not `{state}` yet ({last}); waiting again");
                }
                _ => {
                    // 404 right after an update: the new version may not be visible yet
                    // (flyctl retries this too).
                    last = format!("HTTP 404: {}", Client::message(&reply));
                    tokio::time::sleep(Duration::from_secs(1).min(left)).await;
                }
            }
        }
    }

    /// Polls the machine until its health checks are reported and all passing, or until
    /// `deadline`. Right after a start the list is empty, which is not success. A machine
    /// without configured checks passes at once: there is nothing to wait for.
    pub async fn wait_for_checks(&self, id: &str, deadline: Instant) -> Result<Machine, Error> {
        let mut delay = Duration::from_millis(250);
        loop {
            let m = self.get(id).await?;
            if m.configured_checks() == 0 || m.checks_pass() {
                return Ok(m);
            }
            if matches!(m.state.as_str(), "destroyed" | "destroying") {
                return Err(Error::failure(format!(
                    "machine {id} was destroyed while its health checks were awaited"
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::failure(format!(
                    "machine {id} ({}) did not pass its health checks in time: {} (state {})",
                    m.region,
                    m.describe_checks(),
                    m.state
                ))
                .hint(format!(
                    "see `fly logs -a {} --machine {id}` and `fly checks list -a {}`; raise [deploy] wait_timeout if the app needs longer to become healthy",
                    self.app, self.app
                )));
            }
            // Jittered, growing to 2 s: Get Machine is limited to 5 req/s per machine.
            let jitter = Duration::from_millis(rand::random_range(0..100));
            tokio::time::sleep((delay + jitter).min(left)).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(reply: &Reply, call: &Call) -> Result<T, Error> {
    serde_json::from_value(reply.body.clone()).map_err(|e| {
        let mut err = Error::failure(format!(
            "the Fly Machines API answered {} with JSON of an unexpected shape: {e}",
            call.describe()
        ))
        .hint("check that FLY_API_URL points at the Machines API");
        err.request_id.clone_from(&reply.request_id);
        err
    })
}

fn lease_of(reply: &Reply, call: &Call) -> Result<Lease, Error> {
    match Lease::from_reply(reply) {
        Some(l) if !l.nonce.is_empty() => Ok(l),
        _ => {
            let mut err = Error::failure(format!(
                "the Fly Machines API answered {} without a lease nonce",
                call.describe()
            ))
            .hint("check that FLY_API_URL points at the Machines API");
            err.request_id.clone_from(&reply.request_id);
            Err(err)
        }
    }
}

/// A lease held under this run's own description is this run's.
fn is_ours(lease: &Lease, description: &str) -> bool {
    !lease.nonce.is_empty() && lease.description.as_deref() == Some(description)
}

fn not_found(id: &str, app: &str, reply: &Reply) -> Error {
    let mut e = Error::failure(format!(
        "machine {id} of app `{app}` was not found (HTTP 404: {})",
        Client::message(reply)
    ))
    .hint(format!(
        "it may have been destroyed meanwhile; `fly machines list -a {app}` shows what exists"
    ));
    e.request_id.clone_from(&reply.request_id);
    e
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn unix_to_rfc3339(t: i64) -> String {
    crate::clock::Utc::from_unix(t).rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine(v: Value) -> Machine {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn empty_checks_are_not_passing_and_compat_checks_are_ignored() {
        let m = machine(json!({
            "id": "m1", "state": "started",
            "config": {"image": "i", "checks": {"health": {}}},
            "checks": [{"name": "bg_deployments_compat_http", "status": "critical"}]
        }));
        assert_eq!(m.configured_checks(), 1);
        assert!(!m.checks_pass());
        let m = machine(json!({
            "id": "m1",
            "config": {"services": [{"checks": [{}, {}]}], "checks": {"a": {}}},
            "checks": [
                {"name": "servicecheck-00-http-8080", "status": "passing"},
                {"name": "bg_deployments_compat_tcp", "status": "critical"}
            ]
        }));
        assert_eq!(m.configured_checks(), 3);
        assert!(m.checks_pass());
    }

    #[test]
    fn release_command_console_and_destroyed_machines_are_not_deployed() {
        let m = |state: &str, group: &str| {
            machine(json!({"id": "x", "state": state,
                           "config": {"metadata": {"fly_process_group": group}}}))
        };
        assert!(m("started", "app").is_deployable());
        assert!(m("stopped", "app").is_deployable());
        assert!(!m("destroyed", "app").is_deployable());
        assert!(!m("started", "fly_app_release_command").is_deployable());
        assert!(!m("started", "fly_app_console").is_deployable());
    }

    #[test]
    fn lease_envelope_and_time() {
        let reply = Reply {
            status: StatusCode::OK,
            body: json!({"status": "success", "data": {"nonce": "n1", "owner": "a@b", "expires_at": 1_708_569_778}}),
            request_id: None,
        };
        let l = Lease::from_reply(&reply).unwrap();
        assert_eq!(l.nonce, "n1");
        assert_eq!(l.describe(), "a@b until 2024-02-22T02:42:58Z");
        assert_eq!(unix_to_rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
