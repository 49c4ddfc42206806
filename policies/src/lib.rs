//! remedy's pure core: the manifest language, its validation, the daemon's configuration schema,
//! and the engine that turns declared intent plus observed account state into a plan of actions.
//!
//! **Invariant:** nothing in this crate does I/O, reads the clock or spawns tasks. Text comes in as
//! `&str`, time comes in as a parameter, and every failure is a typed value or a [`Diagnostic`].

pub mod action;
pub mod admission;
pub mod config;
pub mod contest;
pub mod coverage;
pub mod dc_choice;
pub mod diagnostic;
pub mod diff;
mod dn;
pub mod doctor;
pub mod identity;
pub mod load;
pub mod manifest;
pub mod notify;
pub mod observed;
#[cfg(feature = "openapi")]
mod openapi;
pub mod plan;
pub mod privilege;
pub mod replication;
pub mod usn;

pub use action::{Action, Provider};
pub use diagnostic::{Diagnostic, Severity};
pub use identity::Identity;
pub use manifest::{Manifest, ManifestName};
