#![recursion_limit = "256"]
//! flightplan's integration tests, in one binary (one link, one process to schedule, as
//! ripgrep keeps them): the built `flightplan` spawned as a process against the real
//! PostgreSQL and the stateful vendor fakes of `support`.

mod support;

mod action;
mod backup;
mod check_env;
mod deploy;
mod drift;
mod faults_input;
mod faults_migrate;
mod faults_run;
mod fly_edges;
mod fuzz_regressions;
mod layers;
mod layouts;
mod lint;
mod migrate;
mod plan;
mod rehearse;
mod run;
mod smoke;
mod watch_metrics;
