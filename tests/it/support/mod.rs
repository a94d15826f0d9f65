//! What the integration tests share: a scratch database on the real PostgreSQL and the built
//! binary as a process (db), one stateful fake per vendor API on 127.0.0.1 (neon, fly,
//! github), each checked against the vendor's API description (spec, spec_quirks), the TCP fault proxy (faults), and the pipeline tests' world (world).
#![allow(dead_code)]

pub mod db;
pub mod faults;
pub mod fly;
pub mod github;
pub mod neon;
pub mod prometheus;
pub mod spec;
pub mod spec_quirks;
pub mod world;

/// The example app, compiled into the tests: examples have no `CARGO_BIN_EXE_*`, and running
/// `cargo run --example` from a test would wait on the build lock of whoever else is building.
/// Tests call the same `AppConfig::from_env` and `app` that its `main` calls.
#[path = "../../../examples/secure2send_app.rs"]
pub mod secure2send_app;
