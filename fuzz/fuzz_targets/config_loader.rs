//! The configuration loader on arbitrary input: `Config::from_yaml`, which the daemon reads
//! `remedy.yaml` through (daemon/src/cli/plan.rs). Bytes that are not UTF-8 are read lossily.
//!
//! Besides not panicking: a refusal has at least one diagnostic and every diagnostic names the file
//! and points into it (fuzz/src/lib.rs); loading the same text twice gives the same result; and a
//! configuration that loaded, written out again as YAML, loads as the same configuration.

#![no_main]

use libfuzzer_sys::fuzz_target;
use remedy_fuzz::{check_diagnostic, line_lengths};
use remedy_policies::config::Config;

const FILE: &str = "remedy.yaml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let result = Config::from_yaml(FILE, &text);
    assert_eq!(result, Config::from_yaml(FILE, &text), "the same text loaded twice gave two results");
    match result {
        Ok(config) => {
            let written = serde_yaml::to_string(&config).expect("a configuration can be written as YAML");
            let again = Config::from_yaml("written-out.yaml", &written);
            assert_eq!(again.as_ref(), Ok(&config), "{config:#?}\nwritten out as\n{written}\nloads differently");
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "refused without a reason");
            let lines = line_lengths(&text);
            for diagnostic in &diagnostics {
                check_diagnostic(FILE, &text, &lines, diagnostic);
            }
        }
    }
});
