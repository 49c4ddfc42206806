//! remedy's integration tests: one binary, one module per area. They talk to the real things
//! (the Samba AD DC of `scripts/samba-dc`), never to in-process fakes. `scripts/test` starts the
//! DC and runs them; by hand: `scripts/samba-dc start && eval "$(scripts/samba-dc env)"`.

mod ad;
mod cli;
mod crash;
mod dc;
mod harness;
mod secrets;
mod serve;
