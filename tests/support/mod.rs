//! Test support of the check-env tests: a fake Fly Machines API.
pub mod fake_fly;
