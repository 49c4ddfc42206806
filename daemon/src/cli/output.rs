//! Output formats shared by the subcommands: a readable table or text by default, stable JSON and
//! YAML for pipelines.

use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML; returns false for `Text` (the caller prints its own text).
pub fn print_structured<T: Serialize>(format: Format, value: &T) -> Result<bool> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Format::Text => return Ok(false),
    }
    Ok(true)
}
