//! The simulator over real HTTP, as the Entra provider will use it. One test binary; modules by area.

// Fixture helpers are test code too; clippy.toml's allow-unwrap-in-tests reaches only #[test] functions.
#![allow(clippy::unwrap_used)]

mod batch;
mod binary;
mod credentials;
mod delta;
mod faults;
mod realism;
mod support;
mod token;
mod users;
