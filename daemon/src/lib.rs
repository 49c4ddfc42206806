//! The I/O half of remedy: reading manifests and configuration from disk, the directory providers,
//! and the command line. Decisions are made by `remedy-policies`; this crate observes and acts.

pub mod ad;
pub mod api;
pub mod backoff;
pub mod cli;
pub mod controller;
pub mod coord;
pub mod drift;
pub mod entra;
pub mod execute;
pub mod ha;
pub mod manifest_dir;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod observe;
pub mod providers;
pub mod schedule;
pub mod secret;
pub mod store;
pub mod watch;
