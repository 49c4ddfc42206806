//! remedy's integration tests: one binary, one module per area, the helpers they share in
//! `support/`. They talk to the real things (the Samba AD DC of `scripts/samba-dc`, the real
//! `remedy` binary, real HTTP, real directories and sled stores; Entra ID is the graph-sim test
//! double over loopback HTTP), never to an in-process fake of LDAP. `scripts/test` starts the DC
//! and runs them; by hand: `scripts/samba-dc start && eval "$(scripts/samba-dc env)"`.
//!
//! The modules whose tests need the DC: `ad`, `serve`, `recontain`, `crash`, `secrets`, `failover`, `kerberos`, `doctor`, `ha_api` and `dc_outage` (which
//! stops it: see `support::dc::Dc` for how that is kept from the others); in `cli`, the one test
//! of `remedy apply`. `ha_coord`, `ha_api` and `ha` need the etcd cluster of `scripts/ha`
//! (`scripts/ha start && eval "$(scripts/ha env)"`; `ha` the DC too) and fail, saying so, without
//! it (`scripts/test` starts both); they hold `support::etcd::Etcd` (shared), exclusively to stop
//! members.

mod support;

mod ad;
mod api;
mod cli;
mod consistency;
mod crash;
mod dc_outage;
mod doctor;
mod entra;
mod entra_credentials;
mod failover;
mod gitops;
mod ha;
mod ha_api;
mod ha_coord;
mod kerberos;
mod notify;
mod operator_cli;
mod recontain;
mod replica;
mod secrets;
mod serve;
mod store;
mod ui;
mod watch;
