//! Every example the project shows a user is valid as shown: the files in `examples/` and the YAML
//! blocks in `docs/*.md` and the README.

use std::fs;

use remedy_policies::config::Config;
use remedy_policies::load::{assemble, load_file};
use remedy_policies::observed::ObservedState;

use crate::support::{read, repo};

/// The fenced blocks of a Markdown file with the given info string, with their starting line.
fn fenced_blocks(markdown: &str, info: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        match current.as_mut() {
            None if line.trim_start() == format!("```{info}") => current = Some((index + 2, String::new())),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

#[test]
fn example_manifests_are_valid() {
    let dir = repo().join("examples/manifests");
    let mut loads = Vec::new();
    for entry in fs::read_dir(&dir).expect("examples/manifests") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        loads.push(load_file(&name, &read(&path)));
    }
    let set = assemble(loads);
    let problems: Vec<String> = set.diagnostics().map(ToString::to_string).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(set.manifests.len(), 4, "every example document loads");
}

#[test]
fn example_config_is_valid() {
    let config = Config::from_yaml("examples/remedy.yaml", &read(&repo().join("examples/remedy.yaml")))
        .unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(!config.guardrails.allowed_scopes.is_empty());
}

#[test]
fn example_snapshot_parses_and_covers_the_examples() {
    let snapshot: ObservedState =
        serde_yaml::from_str(&read(&repo().join("examples/observed.yaml"))).expect("examples/observed.yaml");
    assert_eq!(snapshot.accounts.len(), 4);
}

#[test]
fn yaml_in_the_docs_is_valid() {
    let mut checked = 0;
    for doc in ["README.md", "docs/manifests.md"] {
        let text = read(&repo().join(doc));
        for (line, block) in fenced_blocks(&text, "yaml") {
            let load = load_file(&format!("{doc}:{line}"), &block);
            let problems: Vec<String> =
                load.rejected.iter().flat_map(|r| &r.diagnostics).map(ToString::to_string).collect();
            assert!(problems.is_empty(), "{doc} block at line {line}: {problems:#?}");
            assert!(!load.manifests.is_empty(), "{doc} block at line {line} holds no manifest");
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} blocks found: did the fence format change?");
}

#[test]
fn configuration_reference_example_is_valid() {
    let text = read(&repo().join("docs/configuration.md"));
    let blocks = fenced_blocks(&text, "yaml");
    let (line, block) = &blocks[0];
    assert!(block.contains("manifests:") && block.contains("guardrails:"), "the first block is the full example");
    Config::from_yaml(&format!("docs/configuration.md:{line}"), block).unwrap_or_else(|e| panic!("{e:#?}"));
    // The others are sections (the `ha:` examples): valid beside the required keys.
    for (line, section) in &blocks[1..] {
        let whole = format!("manifests: {{path: m}}\nguardrails: {{allowedScopes: [\"OU=S,DC=x\"]}}\n{section}");
        Config::from_yaml(&format!("docs/configuration.md:{line}"), &whole).unwrap_or_else(|e| panic!("{e:#?}"));
    }
    assert!(blocks.len() >= 4, "the full example and the ha: examples: {} blocks", blocks.len());
}

/// The operator docs' YAML: manifests load, `remedy.yaml` examples (those with `guardrails`) are
/// valid configurations; anything else (a Prometheus scrape job) is at least YAML.
#[test]
fn yaml_in_the_operator_docs_is_valid() {
    let (mut manifests, mut configs) = (0, 0);
    for doc in ["docs/quickstart.md", "docs/api.md", "docs/operations.md"] {
        let text = read(&repo().join(doc));
        for (line, block) in fenced_blocks(&text, "yaml") {
            let at = format!("{doc}:{line}");
            if block.contains("apiVersion: remedy.dev/v1") {
                let load = load_file(&at, &block);
                let problems: Vec<String> =
                    load.rejected.iter().flat_map(|r| &r.diagnostics).map(ToString::to_string).collect();
                assert!(problems.is_empty() && !load.manifests.is_empty(), "{at}: {problems:#?}");
                manifests += 1;
            } else if block.contains("guardrails:") {
                Config::from_yaml(&at, &block).unwrap_or_else(|e| panic!("{at}: {e:#?}"));
                configs += 1;
            } else {
                serde_yaml::from_str::<serde_yaml::Value>(&block).unwrap_or_else(|e| panic!("{at}: {e}"));
            }
        }
    }
    assert!(manifests >= 1 && configs >= 2, "{manifests} manifests, {configs} configurations: did the docs move?");
}
