//! `remedy openapi`: prints the HTTP API's OpenAPI document, the one `remedy serve` answers at
//! `GET /openapi.json` (offline: no daemon, no configuration).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};

#[derive(Debug, clap::Args)]
pub struct OpenapiArgs {}

pub fn run(_args: &OpenapiArgs) -> Result<ExitCode> {
    let text = serde_json::to_string_pretty(&crate::api::openapi()).context("writing the OpenAPI document")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}
