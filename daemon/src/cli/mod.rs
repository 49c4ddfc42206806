//! One module per subcommand: parse its flags, do the work through the library modules, print.
//! The operator commands (`status`, `history`, `reconcile`, `approve`) talk to a running
//! `remedy serve` through its HTTP API, with [`client`].

pub mod apply;
pub mod approve;
pub mod client;
pub mod doctor;
pub mod history;
pub mod inputs;
pub mod live;
pub mod openapi;
pub mod output;
pub mod plan;
pub mod reconcile;
pub mod revision;
pub mod serve;
pub mod status;
pub mod validate;
