//! One module per subcommand: parse its flags, do the work through the library modules, print.

pub mod apply;
pub mod live;
pub mod output;
pub mod plan;
pub mod serve;
pub mod validate;
