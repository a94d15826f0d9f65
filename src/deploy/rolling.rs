//! The `fly` provider's strategy: lease every machine of the process group, record its
//! config, update in batches (canary first if asked), put every updated machine back on
//! its recorded config if anything fails, verify the whole group, release the leases.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;

use super::fly::{LeaseRefused, Machine, Machines, PREVIOUS_IMAGE_KEY};
use super::{
    Action, Deployer, MachineReport, MachineStatus, MaxUnavailable, Provider, Report, RestoreDb,
    Strategy,
};
use crate::error::Error;
use crate::redact::Redactor;

/// The `fly` provider, configured.
pub struct FlyDeployer {
    pub api: Machines,
    pub group: String,
    pub strategy: Strategy,
    pub max_unavailable: MaxUnavailable,
    /// Per machine: from the update until it is started and its checks pass.
    pub wait_timeout: Duration,
    pub lease_ttl: Duration,
    pub redactor: Redactor,
}

/// Where the machines go.
#[derive(Clone, Copy)]
enum Target<'a> {
    Image(&'a str),
    /// Each machine to the image in its `flightplan_previous_image` metadata.
    Previous,
    /// Each machine stays on the image it runs (a database restore between stop and start).
    Current,
}

/// Our lease nonces by machine id. Shared by the work and the refresher running beside it.
#[derive(Default)]
struct Leases(Mutex<BTreeMap<String, String>>);

impl Leases {
    fn set(&self, id: &str, nonce: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string(), nonce);
    }

    fn nonce(&self, id: &str) -> String {
        self.snapshot()
            .into_iter()
            .find(|(m, _)| m == id)
            .map(|(_, n)| n)
            .unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// One machine of the run: its config as recorded under our lease, and what we do to it.
struct Entry {
    before: Machine,
    /// The config to send; `None` when it already runs the target image.
    target: Option<Value>,
    target_image: String,
    status: MachineStatus,
    /// An update was sent (its outcome may be unknown), so a failure must look at it again.
    touched: bool,
    /// Stopped by this run for a database restore: it must be started again.
    stopped: bool,
    error: Option<String>,
}

impl Deployer for FlyDeployer {
    async fn preview(&self, image: Option<&str>) -> Report {
        self.preview_group(image).await
    }

    async fn deploy(&self, image: &str) -> Report {
        self.run(Action::Deploy, Target::Image(image), None).await
    }

    async fn rollback(&self, image: Option<&str>, restore: Option<RestoreDb<'_>>) -> Report {
        let target = image.map_or(Target::Previous, Target::Image);
        self.run(Action::Rollback, target, restore).await
    }

    async fn restore_database(&self, restore: RestoreDb<'_>) -> Report {
        self.run(Action::Rollback, Target::Current, Some(restore))
            .await
    }
}

impl FlyDeployer {
    /// The group's machines as they are, `pending` where `image` differs.
    async fn preview_group(&self, image: Option<&str>) -> Report {
        let mut report = Report::new(Action::Deploy, Provider::Fly, self.api.app());
        report.dry_run = true;
        report.image = image.map(str::to_string);
        let listed = match self.api.list(&self.group).await {
            Ok(l) => l,
            Err(e) => return report.failed(e),
        };
        for m in &listed {
            if let Some(current) = m.image() {
                report
                    .previous_images
                    .insert(m.id.clone(), current.to_string());
            }
        }
        report.machines = listed
            .iter()
            .map(|m| {
                let mut r = untouched(m, None);
                r.status = match image {
                    Some(i) if m.image() != Some(i) => MachineStatus::Pending,
                    _ => MachineStatus::Unchanged,
                };
                r
            })
            .collect();
        // The batches `deploy` would update them in, as it would form them.
        let todo: Vec<usize> = (0..report.machines.len())
            .filter(|&i| report.machines[i].status == MachineStatus::Pending)
            .collect();
        for (n, batch) in self.batches(&todo, listed.len()).iter().enumerate() {
            for &i in batch {
                report.machines[i].batch = Some(n as u32 + 1);
            }
        }
        report
    }

    async fn run(
        &self,
        action: Action,
        target: Target<'_>,
        restore: Option<RestoreDb<'_>>,
    ) -> Report {
        let app = self.api.app().to_string();
        let mut report = Report::new(action, Provider::Fly, &app);
        report.recorded_in = Some(format!("each machine's metadata ({PREVIOUS_IMAGE_KEY})"));
        if let Target::Image(i) = target {
            report.image = Some(i.to_string());
        }

        let listed = match self.api.list(&self.group).await {
            Ok(l) => l,
            Err(e) => return report.failed(e),
        };
        if listed.is_empty() {
            return report.failed(
                Error::failure(format!(
                    "app `{app}` has no machines in process group `{}`: nothing to deploy to",
                    self.group
                ))
                .hint(format!(
                    "`fly machines list -a {app}` shows the machines and their groups; set [deploy] process_group, or create the first machines with `fly deploy`"
                )),
            );
        }
        tracing::info!(
            "{app}: {} machine(s) in process group `{}`: {}",
            listed.len(),
            self.group,
            listed
                .iter()
                .map(|m| format!("{} ({}, {})", m.id, m.region, m.state))
                .collect::<Vec<_>>()
                .join(", ")
        );

        // Every lease before any change: a machine held by someone else stops the run here.
        let leases = match self.acquire(&listed, action).await {
            Ok(l) => l,
            Err(e) => {
                report.machines = listed.iter().map(|m| untouched(m, None)).collect();
                return report.failed(e);
            }
        };
        self.keep_alive(
            &leases,
            self.work(&mut report, &leases, &listed, target, restore),
        )
        .await;
        self.release(&leases).await;
        report
    }

    /// Acquires a lease on each machine, in order, within the deploy's wait budget; on any
    /// refusal releases what it got. Each lease is described with a claim unique to this
    /// run, which is how a lease granted to an attempt whose answer was lost is recognised.
    async fn acquire(&self, machines: &[Machine], action: Action) -> Result<Leases, Error> {
        let leases = Leases::default();
        let claim = format!(
            "flightplan {} {:016x}",
            match action {
                Action::Deploy => "deploy",
                Action::Rollback => "rollback",
            },
            rand::random::<u64>()
        );
        let deadline = Instant::now() + self.wait_timeout;
        for m in machines {
            match self
                .api
                .acquire_lease(&m.id, self.lease_ttl, &claim, deadline)
                .await
            {
                Ok(lease) => {
                    super::leases::hold(&self.api, &m.id, &lease.nonce);
                    leases.set(&m.id, lease.nonce);
                }
                Err(refused) => {
                    self.release(&leases).await;
                    return Err(match refused {
                        LeaseRefused::Held {
                            holder,
                            message,
                            request_id,
                        } => {
                            let who = holder.map_or_else(
                                || format!("someone else ({message})"),
                                |l| format!("{} (Fly: {message})", l.describe()),
                            );
                            let mut e = Error::failure(format!(
                                "machine {} ({}) of app `{}` is leased by {who}; nothing was changed",
                                m.id,
                                m.region,
                                self.api.app()
                            ))
                            .hint(
                                "another deploy or operator is changing this app: wait for it to finish or for its lease to expire, then run again (in GitHub Actions, a `concurrency` group keeps deploys from overlapping)",
                            );
                            e.request_id = request_id;
                            e
                        }
                        LeaseRefused::Failed(e) => e,
                    });
                }
            }
        }
        tracing::info!(
            "leased {} machine(s) for {}s",
            machines.len(),
            self.lease_ttl.as_secs()
        );
        Ok(leases)
    }

    /// Runs `work` while refreshing the leases every third of their TTL beside it.
    async fn keep_alive<F: Future>(&self, leases: &Leases, work: F) -> F::Output {
        let refresher = async {
            loop {
                tokio::time::sleep(self.lease_ttl / 3).await;
                for (id, nonce) in leases.snapshot() {
                    match self.api.refresh_lease(&id, &nonce, self.lease_ttl).await {
                        Ok(lease) => {
                            super::leases::hold(&self.api, &id, &lease.nonce);
                            leases.set(&id, lease.nonce);
                        }
                        // The next change of this machine will fail and say why.
                        Err(e) => tracing::warn!(
                            "{}",
                            self.redactor.scrub(&format!(
                                "machine {id}: refreshing the lease failed: {}",
                                e.message
                            ))
                        ),
                    }
                }
            }
        };
        tokio::select! {
            biased;
            out = work => out,
            _ = refresher => unreachable!("the refresher never ends"),
        }
    }

    /// Releases every lease; a failure only costs the lease's remaining TTL, so it is a
    /// warning.
    async fn release(&self, leases: &Leases) {
        for (id, nonce) in leases.snapshot() {
            let released = self.api.release_lease(&id, &nonce).await;
            super::leases::forget(self.api.app(), &id);
            if let Err(e) = released {
                tracing::warn!(
                    "{}",
                    self.redactor.scrub(&format!(
                        "machine {id}: releasing the lease failed ({}); it expires by itself within {}s",
                        e.message,
                        self.lease_ttl.as_secs()
                    ))
                );
            }
        }
    }

    /// Everything done under the leases; fills in the report.
    async fn work(
        &self,
        report: &mut Report,
        leases: &Leases,
        listed: &[Machine],
        target: Target<'_>,
        restore: Option<RestoreDb<'_>>,
    ) {
        // Re-read each machine now that it is ours: the listing may predate the lease.
        let mut entries = Vec::with_capacity(listed.len());
        for m in listed {
            match self.api.get(&m.id).await {
                Ok(m) => entries.push(Entry {
                    before: m,
                    target: None,
                    target_image: String::new(),
                    status: MachineStatus::NotUpdated,
                    touched: false,
                    stopped: false,
                    error: None,
                }),
                Err(e) => {
                    report.machines = listed.iter().map(|m| untouched(m, None)).collect();
                    report.error = Some(e);
                    return;
                }
            }
        }
        if let Err(e) = self.plan(&mut entries, target, report) {
            report.machines = entries.iter().map(|e| untouched(&e.before, None)).collect();
            report.error = Some(e);
            return;
        }

        // A database restore happens while the app is down (DESIGN.md): stop every machine,
        // restore, then bring all of them up at once on their target image.
        let restoring = restore.is_some();
        if let Some(restore) = restore {
            if let Err(e) = self.stop_all(&mut entries, leases).await {
                report.reverted = self.restart(&mut entries, leases).await;
                report.error = Some(e);
                self.fill(report, &entries).await;
                return;
            }
            match restore.await {
                Ok(d) => report.database = Some(d),
                Err(mut e) => {
                    report.reverted = self.restart(&mut entries, leases).await;
                    e.message = format!("database restore failed: {}", e.message);
                    if report.reverted {
                        e.hint = Some(format!(
                            "the machines were started again on the image they had{}",
                            e.hint.as_deref().map(sentence).unwrap_or_default()
                        ));
                    }
                    report.error = Some(e);
                    self.fill(report, &entries).await;
                    return;
                }
            }
        }

        let todo: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].target.is_some() || entries[i].stopped)
            .collect();
        let batches = if restoring {
            vec![todo.clone()]
        } else {
            self.batches(&todo, entries.len())
        };
        if todo.is_empty() {
            tracing::info!("every machine already runs its target image: nothing to update");
        } else {
            tracing::info!(
                "updating {} machine(s) in {} batch(es) ({}, at most {} at a time)",
                todo.len(),
                batches.len(),
                match self.strategy {
                    Strategy::Rolling => "rolling",
                    Strategy::Canary => "canary first",
                },
                self.max_unavailable.of(entries.len())
            );
        }

        let mut failure = None;
        for batch in &batches {
            for &i in batch {
                entries[i].touched = true;
            }
            let results = join_all(batch.iter().map(|&i| {
                let e = &entries[i];
                async move {
                    match &e.target {
                        Some(config) => {
                            self.update_one(&e.before, config, &e.target_image, leases)
                                .await
                        }
                        // Stopped for the restore and already on its target image.
                        None => self.start_one(&e.before, leases).await,
                    }
                }
            }))
            .await;
            for (&i, result) in batch.iter().zip(results) {
                match result {
                    Ok(()) => entries[i].status = MachineStatus::Updated,
                    Err(e) => {
                        entries[i].error = Some(e.message.clone());
                        failure.get_or_insert(e);
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        for e in &mut entries {
            if e.target.is_none() && e.error.is_none() {
                e.status = MachineStatus::Unchanged;
            }
        }

        if failure.is_none()
            && let Err(e) = self.verify(&entries).await
        {
            failure = Some(e);
        }
        if let Some(mut e) = failure {
            if restoring {
                // The recorded configs run the newer code, which must not meet the restored,
                // older schema: nothing is put back, and the report says where each is.
                for en in entries.iter_mut().filter(|en| en.error.is_some()) {
                    en.status = MachineStatus::Failed;
                }
                e.hint = Some(format!(
                    "the database was restored; machines that failed stay as they are (newer code must not run on the restored schema): fix them with `fly machine update ID --image IMAGE -a {}` or `fly machine start ID`",
                    self.api.app()
                ));
            } else if entries.iter().any(|e| e.touched) {
                tracing::warn!(
                    "{}",
                    self.redactor.scrub(&format!("{}; reverting", e.message))
                );
                self.revert(&mut entries, leases).await;
                let reverted: Vec<&str> = ids(&entries, MachineStatus::Reverted);
                let stuck: Vec<&str> = ids(&entries, MachineStatus::RevertFailed);
                report.reverted = !reverted.is_empty();
                e.hint = Some(if stuck.is_empty() {
                    format!(
                        "{} put back on {} previous config ({}); fix the cause and deploy again{}",
                        plural(reverted.len(), "machine was", "machines were"),
                        if reverted.len() == 1 { "its" } else { "their" },
                        reverted.join(", "),
                        e.hint.as_deref().map(sentence).unwrap_or_default()
                    )
                } else {
                    format!(
                        "putting back failed for {}: check them with `fly machines list -a {}` and fix by hand with `fly machine update ID --image PREVIOUS_IMAGE` (previous images are in this report)",
                        stuck.join(", "),
                        self.api.app()
                    )
                });
            }
            report.error = Some(e);
        }
        self.fill(report, &entries).await;
    }

    /// Decides each machine's target config; fails (nothing changed yet) when a target
    /// cannot be known.
    fn plan(
        &self,
        entries: &mut [Entry],
        target: Target<'_>,
        report: &mut Report,
    ) -> Result<(), Error> {
        let app = self.api.app();
        let no_config: Vec<String> = entries
            .iter()
            .filter(|e| e.before.config.is_none() || e.before.image().is_none())
            .map(|e| {
                format!(
                    "{} (host {})",
                    e.before.id,
                    e.before.host_status.as_deref().unwrap_or("unknown")
                )
            })
            .collect();
        if !no_config.is_empty() {
            return Err(Error::failure(format!(
                "the Fly Machines API did not return the full config of {}: flightplan updates every machine of the group or none; nothing was changed",
                no_config.join(", ")
            ))
            .hint("a machine's host may be unreachable (https://status.flyio.net); run again later"));
        }
        let mut missing = Vec::new();
        for e in entries.iter_mut() {
            let current = e.before.image().unwrap_or_default().to_string();
            let wanted = match target {
                Target::Image(i) => i.to_string(),
                Target::Current => current.clone(),
                Target::Previous => match e.before.metadata(PREVIOUS_IMAGE_KEY) {
                    Some(p) if !p.trim().is_empty() => p.trim().to_string(),
                    _ => {
                        missing.push(e.before.id.clone());
                        continue;
                    }
                },
            };
            report
                .previous_images
                .insert(e.before.id.clone(), current.clone());
            if wanted != current {
                e.target = Some(with_image(e.before.config.as_ref(), &wanted, &current));
            }
            e.target_image = wanted;
        }
        if !missing.is_empty() {
            return Err(Error::failure(format!(
                "no previous image is recorded on machine(s) {} (metadata {PREVIOUS_IMAGE_KEY}, written by `flightplan deploy`); nothing was changed",
                missing.join(", ")
            ))
            .hint(format!(
                "name the image to go to: `flightplan rollback --image REF` (`fly releases --image -a {app}` lists earlier images)"
            )));
        }
        if let Target::Previous | Target::Current = target {
            let images: BTreeSet<&str> = entries.iter().map(|e| e.target_image.as_str()).collect();
            report.image = (images.len() == 1)
                .then(|| images.into_iter().next().unwrap_or_default().to_string());
        }
        Ok(())
    }

    /// Batches of machine indexes: the canary alone first when asked, then groups of
    /// `max_unavailable` (of the whole group's size, as fly.toml counts it).
    fn batches(&self, todo: &[usize], group_size: usize) -> Vec<Vec<usize>> {
        let size = self.max_unavailable.of(group_size);
        let mut rest = todo;
        let mut out = Vec::new();
        if self.strategy == Strategy::Canary
            && let Some((first, others)) = rest.split_first()
        {
            out.push(vec![*first]);
            rest = others;
        }
        out.extend(rest.chunks(size).map(<[usize]>::to_vec));
        out
    }

    /// Sends one machine its new config, then waits until it runs it: started and healthy,
    /// or stopped again if it was stopped before (a deploy does not wake idle machines).
    async fn update_one(
        &self,
        before: &Machine,
        config: &Value,
        image: &str,
        leases: &Leases,
    ) -> Result<(), Error> {
        let id = &before.id;
        let running = before.is_running();
        tracing::info!("machine {id} ({}): updating to {image}", before.region);
        let updated = self
            .api
            .update(id, &leases.nonce(id), config, !running)
            .await
            .map_err(|e| {
                prefix(
                    e,
                    &format!("machine {id} ({}): update failed", before.region),
                )
            })?;
        let deadline = Instant::now() + self.wait_timeout;
        let state = if running { "started" } else { "stopped" };
        self.api
            .wait_for_state(id, &updated.instance_id, state, deadline)
            .await?;
        if running {
            let m = self.api.wait_for_checks(id, deadline).await?;
            match m.configured_checks() {
                0 => tracing::info!("machine {id}: started (it has no health checks to wait for)"),
                _ => tracing::info!(
                    "machine {id}: started, {} health check(s) passing",
                    m.checks().len()
                ),
            }
        } else {
            tracing::info!("machine {id}: updated and left stopped, as it was");
        }
        Ok(())
    }

    /// After the last batch: the group has as many machines as before, each on its target
    /// image, and each running one passes its checks.
    async fn verify(&self, entries: &[Entry]) -> Result<(), Error> {
        let app = self.api.app();
        let now = self.api.list(&self.group).await?;
        let known: HashMap<&str, &Entry> =
            entries.iter().map(|e| (e.before.id.as_str(), e)).collect();
        if now.len() != entries.len() {
            return Err(Error::failure(format!(
                "process group `{}` of app `{app}` had {} machine(s) before the deploy and has {} now",
                self.group,
                entries.len(),
                now.len()
            ))
            .hint(format!("`fly machines list -a {app}` shows what changed; someone may be scaling the app")));
        }
        for m in &now {
            let Some(e) = known.get(m.id.as_str()) else {
                return Err(Error::failure(format!(
                    "machine {} appeared in process group `{}` during the deploy",
                    m.id, self.group
                )));
            };
            let image = m.image().unwrap_or("no image");
            if image != e.target_image {
                return Err(Error::failure(format!(
                    "machine {} ({}) runs {image}, not {}",
                    m.id, m.region, e.target_image
                )));
            }
            if e.before.is_running() {
                let mut fresh = self.api.get(&m.id).await?;
                // A machine this run did not update may still be warming up: one an
                // interrupted earlier deploy had just started reports no check yet. Give it
                // the wait an updated machine gets before judging it (issue 8: found by
                // tests/faults_run.rs; before, such a machine failed the verification at
                // once and the whole group was reverted around it).
                if fresh.configured_checks() > 0 && !fresh.checks_pass() {
                    let deadline = Instant::now() + self.wait_timeout;
                    // Still `starting` (the killed deploy was waiting for it): wait for the
                    // start first, as update_one does.
                    if fresh.state == "starting" {
                        let _ = self
                            .api
                            .wait_for_state(&m.id, &fresh.instance_id, "started", deadline)
                            .await;
                    }
                    if let Ok(m) = self.api.wait_for_checks(&m.id, deadline).await {
                        fresh = m;
                    }
                }
                if fresh.configured_checks() > 0 && !fresh.checks_pass() {
                    return Err(Error::failure(format!(
                        "machine {} ({}) is not passing its health checks after the deploy: {}",
                        m.id,
                        m.region,
                        fresh.describe_checks()
                    )));
                }
            }
        }
        tracing::info!(
            "verified: {} machine(s) of `{}` on their target image and healthy",
            now.len(),
            self.group
        );
        Ok(())
    }

    /// Stops every running machine for a database restore and waits until each is stopped.
    async fn stop_all(&self, entries: &mut [Entry], leases: &Leases) -> Result<(), Error> {
        let running: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].before.is_running())
            .collect();
        tracing::info!(
            "stopping {} machine(s) so nothing writes while the database is restored",
            running.len()
        );
        for &i in &running {
            entries[i].stopped = true;
        }
        let results = join_all(running.iter().map(|&i| {
            let m = &entries[i].before;
            async move {
                self.api.stop(&m.id, &leases.nonce(&m.id)).await?;
                let deadline = Instant::now() + self.wait_timeout;
                self.api
                    .wait_for_state(&m.id, &m.instance_id, "stopped", deadline)
                    .await
            }
        }))
        .await;
        let mut first = None;
        for (&i, r) in running.iter().zip(results) {
            if let Err(e) = r {
                entries[i].error = Some(e.message.clone());
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(prefix(
                e,
                "stopping the machines before the database restore failed; the database was not touched",
            )),
        }
    }

    /// Starts again the machines this run stopped, on the config they have; `true` if any
    /// was started.
    async fn restart(&self, entries: &mut [Entry], leases: &Leases) -> bool {
        let stopped: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].stopped).collect();
        let results = join_all(
            stopped
                .iter()
                .map(|&i| self.start_one(&entries[i].before, leases)),
        )
        .await;
        let mut any = false;
        for (&i, r) in stopped.iter().zip(results) {
            let e = &mut entries[i];
            match r {
                Ok(()) => {
                    e.status = MachineStatus::Reverted;
                    any = true;
                }
                Err(err) => {
                    e.status = MachineStatus::RevertFailed;
                    e.error = Some(format!("starting it again failed: {}", err.message));
                }
            }
        }
        any
    }

    /// Starts a machine this run stopped and waits until it is started and healthy.
    async fn start_one(&self, before: &Machine, leases: &Leases) -> Result<(), Error> {
        let id = &before.id;
        tracing::info!("machine {id} ({}): starting", before.region);
        self.api.start(id, &leases.nonce(id)).await?;
        let deadline = Instant::now() + self.wait_timeout;
        let now = self.api.get(id).await?;
        self.api
            .wait_for_state(id, &now.instance_id, "started", deadline)
            .await?;
        self.api.wait_for_checks(id, deadline).await?;
        Ok(())
    }

    /// Puts every touched machine back on its recorded config, in batches like the
    /// update, and marks each `reverted` or `revert_failed`.
    async fn revert(&self, entries: &mut [Entry], leases: &Leases) {
        let touched: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].touched).collect();
        for batch in touched.chunks(self.max_unavailable.of(entries.len())) {
            let results = join_all(
                batch
                    .iter()
                    .map(|&i| self.revert_one(&entries[i].before, leases)),
            )
            .await;
            for (&i, result) in batch.iter().zip(results) {
                let e = &mut entries[i];
                match result {
                    Ok(true) => e.status = MachineStatus::Reverted,
                    // The update never took effect: the machine is as it was.
                    Ok(false) => e.status = MachineStatus::NotUpdated,
                    Err(err) => {
                        e.status = MachineStatus::RevertFailed;
                        let msg = format!("putting back failed: {}", err.message);
                        e.error = Some(match e.error.take() {
                            Some(first) => format!("{first}; {msg}"),
                            None => msg,
                        });
                    }
                }
            }
        }
    }

    /// Puts one machine back; `Ok(false)` when it still had its recorded image and metadata.
    async fn revert_one(&self, before: &Machine, leases: &Leases) -> Result<bool, Error> {
        let id = &before.id;
        let now = self.api.get(id).await?;
        if now.image() == before.image()
            && now.metadata(PREVIOUS_IMAGE_KEY) == before.metadata(PREVIOUS_IMAGE_KEY)
        {
            return Ok(false);
        }
        let config = before
            .config
            .as_ref()
            .expect("planned machines have a config");
        tracing::info!(
            "machine {id} ({}): putting back {}",
            before.region,
            before.image().unwrap_or("its previous config")
        );
        let running = before.is_running();
        let updated = self
            .api
            .update(id, &leases.nonce(id), config, !running)
            .await?;
        let deadline = Instant::now() + self.wait_timeout;
        let state = if running { "started" } else { "stopped" };
        self.api
            .wait_for_state(id, &updated.instance_id, state, deadline)
            .await?;
        if running {
            self.api.wait_for_checks(id, deadline).await?;
        }
        tracing::info!("machine {id}: back on its previous config");
        Ok(true)
    }

    /// The report's machines, with their state as the API shows it now.
    async fn fill(&self, report: &mut Report, entries: &[Entry]) {
        let now: HashMap<String, Machine> = match self.api.list(&self.group).await {
            Ok(l) => l.into_iter().map(|m| (m.id.clone(), m)).collect(),
            Err(e) => {
                tracing::warn!(
                    "{}",
                    self.redactor.scrub(&format!(
                        "could not list the machines after the run: {}",
                        e.message
                    ))
                );
                HashMap::new()
            }
        };
        report.machines = entries
            .iter()
            .map(|e| {
                let seen = now.get(&e.before.id).unwrap_or(&e.before);
                MachineReport {
                    id: e.before.id.clone(),
                    region: Some(e.before.region.clone()).filter(|r| !r.is_empty()),
                    image: seen.image().map(str::to_string),
                    status: e.status,
                    state: Some(seen.state.clone()).filter(|s| !s.is_empty()),
                    previous_image: e.before.image().map(str::to_string),
                    error: e.error.clone(),
                    batch: None,
                }
            })
            .collect();
    }
}

/// The config with a new image, remembering the current one for the next rollback. Every
/// other field is kept as the API returned it: updates replace the whole config.
fn with_image(config: Option<&Value>, image: &str, current: &str) -> Value {
    let mut config = config
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    if let Some(obj) = config.as_object_mut() {
        obj.insert("image".into(), Value::String(image.to_string()));
        let metadata = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if !metadata.is_object() {
            *metadata = Value::Object(Default::default());
        }
        if let Some(m) = metadata.as_object_mut() {
            m.insert(
                PREVIOUS_IMAGE_KEY.into(),
                Value::String(current.to_string()),
            );
        }
    }
    config
}

fn untouched(m: &Machine, error: Option<String>) -> MachineReport {
    MachineReport {
        id: m.id.clone(),
        region: Some(m.region.clone()).filter(|r| !r.is_empty()),
        image: m.image().map(str::to_string),
        status: MachineStatus::NotUpdated,
        state: Some(m.state.clone()).filter(|s| !s.is_empty()),
        previous_image: m.image().map(str::to_string),
        error,
        batch: None,
    }
}

fn ids(entries: &[Entry], status: MachineStatus) -> Vec<&str> {
    entries
        .iter()
        .filter(|e| e.status == status)
        .map(|e| e.before.id.as_str())
        .collect()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `". Hint text"`: another hint appended as a sentence of its own.
fn sentence(h: &str) -> String {
    let mut c = h.chars();
    match c.next() {
        Some(first) => format!(". {}{}", first.to_uppercase(), c.as_str()),
        None => String::new(),
    }
}

fn prefix(mut e: Error, context: &str) -> Error {
    e.message = format!("{context}: {}", e.message);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_new_image_keeps_every_other_field_and_records_the_old_one() {
        let config = json!({
            "image": "app:v1",
            "env": {"A": "1"},
            "guest": {"cpus": 1},
            "metadata": {"fly_process_group": "app"},
            "services": [{"internal_port": 8080}]
        });
        let new = with_image(Some(&config), "app:v2", "app:v1");
        assert_eq!(new["image"], "app:v2");
        assert_eq!(new["metadata"][PREVIOUS_IMAGE_KEY], "app:v1");
        assert_eq!(new["metadata"]["fly_process_group"], "app");
        assert_eq!(new["env"], config["env"]);
        assert_eq!(new["services"], config["services"]);
        assert_eq!(new["guest"], config["guest"]);
    }
}
