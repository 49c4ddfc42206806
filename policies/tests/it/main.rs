//! remedy-policies' integration tests: one binary, one module per area. Everything here is pure:
//! no directory, no network, no clock but the one a test sets.

mod support;

mod examples_and_docs;
mod hostile_input;
mod malformed;
mod plan_cases;
mod plan_diff;
mod plan_properties;
