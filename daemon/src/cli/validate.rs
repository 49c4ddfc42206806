//! `remedy validate PATH...`

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use super::output::{print_structured, Format};
use crate::manifest_dir;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Manifest files or directories (searched recursively for *.yaml and *.yml).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    format: Format,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    valid: Vec<ValidManifest<'a>>,
    diagnostics: Vec<&'a remedy_policies::Diagnostic>,
}

#[derive(Serialize)]
struct ValidManifest<'a> {
    name: &'a str,
    origin: String,
    generation: &'a str,
}

pub fn run(args: &ValidateArgs) -> Result<ExitCode> {
    let set = manifest_dir::load_set(&args.paths)?;
    let report = Report {
        valid: set
            .manifests
            .iter()
            .map(|m| ValidManifest {
                name: m.name.as_str(),
                origin: m.origin.to_string(),
                generation: m.generation.as_str(),
            })
            .collect(),
        diagnostics: set.diagnostics().collect(),
    };
    if !print_structured(args.format, &report)? {
        let mut out = io::stdout().lock();
        for diagnostic in &report.diagnostics {
            writeln!(out, "{diagnostic}")?;
        }
        writeln!(out, "{} valid manifest(s), {} rejected document(s)", set.manifests.len(), set.rejected.len())?;
        out.flush()?;
    }
    Ok(if set.is_valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
