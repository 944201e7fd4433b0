//! The README kept true by the code: its flag table is the binary's `--help`, its
//! troubleshooting table names every reason either kind can give, and the alert thresholds it
//! quotes are the chart's rules.

use chroma_sync_operator::{connection, run, source};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rows of the first Markdown table after `heading`, as cells (backticks kept).
fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    text[start..]
        .lines()
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'))
        .skip(2) // the header and its rule
        .map(|l| {
            let l = l.trim().trim_start_matches('|').trim_end_matches('|');
            l.split(" | ").map(|c| c.trim().to_owned()).collect()
        })
        .collect()
}

/// The backticked words of a cell.
fn quoted(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(ToOwned::to_owned)
        .collect()
}

/// One option of `--help`: its environment variable and default, if any.
#[derive(Debug, PartialEq)]
struct Flag {
    env: Option<String>,
    default: Option<String>,
}

fn bracketed(text: &str, key: &str) -> Option<String> {
    let from = text.find(&format!("[{key}: "))? + key.len() + 3;
    let rest = &text[from..];
    let value = &rest[..rest.find(']')?];
    Some(value.trim_end_matches('=').to_owned())
}

/// The options `--help` lists (but help and version), by flag.
fn help_flags() -> BTreeMap<String, Flag> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chroma-sync-operator"))
        .arg("--help")
        .output()
        .expect("the binary runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("UTF-8");
    let mut flags = BTreeMap::new();
    let mut lines = help.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(flag) = line.split_whitespace().next() else {
            continue;
        };
        if !flag.starts_with("--") || flag == "--help" || flag == "--version" {
            continue;
        }
        let text = lines.peek().copied().unwrap_or_default();
        flags.insert(
            flag.to_owned(),
            Flag {
                env: bracketed(text, "env"),
                default: bracketed(text, "default"),
            },
        );
    }
    flags
}

#[test]
fn the_flag_table_is_the_binarys_help() {
    let readme = read("README.md");
    let rows = table_after(&readme, "| flag | environment | default | meaning |");
    let table: BTreeMap<String, (String, String)> = rows
        .iter()
        .map(|r| (quoted(&r[0])[0].clone(), (r[1].clone(), r[2].clone())))
        .collect();
    let help = help_flags();
    assert!(help.len() >= 15, "{help:?}");
    let documented: BTreeSet<_> = table.keys().collect();
    let offered: BTreeSet<_> = help.keys().collect();
    assert_eq!(documented, offered, "README's flag table against --help");
    for (flag, Flag { env, default }) in &help {
        let (env_cell, default_cell) = &table[flag];
        assert_eq!(
            quoted(env_cell).first(),
            env.as_ref(),
            "{flag}'s environment"
        );
        if let Some(default) = default {
            let shown = quoted(default_cell)
                .first()
                .cloned()
                .unwrap_or_else(|| default_cell.clone());
            assert_eq!(&shown, default, "{flag}'s default");
        }
    }
}

#[test]
fn the_troubleshooting_table_names_every_reason_of_every_kind() {
    let readme = read("README.md");
    let rows = table_after(&readme, "## Troubleshooting");
    let named: BTreeSet<String> = rows.iter().flat_map(|r| quoted(&r[0])).collect();
    let sources = source::Reason::ALL.iter().map(|r| r.as_str());
    let runs = run::Reason::ALL.iter().map(|r| r.as_str());
    let connections = connection::Reason::ALL.iter().map(|r| r.as_str());
    let missing: Vec<&str> = sources
        .chain(runs)
        .chain(connections)
        .filter(|r| !named.contains(*r))
        .collect();
    assert!(
        missing.is_empty(),
        "not in README's troubleshooting table: {missing:?}"
    );
    let known: BTreeSet<&str> = source::Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .chain(run::Reason::ALL.iter().map(|r| r.as_str()))
        .chain(connection::Reason::ALL.iter().map(|r| r.as_str()))
        .collect();
    let stale: Vec<&String> = named
        .iter()
        .filter(|n| !known.contains(n.as_str()))
        .collect();
    assert!(stale.is_empty(), "reasons the code never gives: {stale:?}");
}

#[test]
fn the_alert_thresholds_the_readme_quotes_are_the_rules() {
    let rules = read("deploy/helm/chroma-sync-operator/templates/prometheusrule.yaml");
    let readme = read("README.md");
    let after = |alert: &str, key: &str| -> String {
        let at = rules.find(&format!("alert: {alert}")).expect(alert);
        let from = rules[at..].find(key).expect(key) + at + key.len();
        rules[from..]
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let ratio: f64 = {
        let at = rules
            .find("alert: ChromaSyncChromaErrors")
            .expect("the error-rate alert");
        let expr = &rules[at..];
        let from = expr.find("> ").expect("a threshold") + 2;
        expr[from..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let percent = format!("a Chroma error rate above {}%", (ratio * 100.0).round());
    assert!(readme.contains(&percent), "README should say {percent:?}");
    let minutes = |d: String| d.trim_end_matches('m').to_owned();
    let not_ready = minutes(after("ChromaSyncObjectNotReady", "for: "));
    let no_leader = minutes(after("ChromaSyncNoLeader", "for: "));
    for quoted in [
        format!("an object not Ready for {not_ready} minutes"),
        format!("no leader for {no_leader} minutes"),
    ] {
        assert!(readme.contains(&quoted), "README should say {quoted:?}");
    }
}

/// Every series the chart's alert rules and Grafana dashboard query is one the operator exports,
/// so a renamed metric cannot leave an alert that never fires or a panel that stays empty.
#[test]
fn the_alerts_and_the_dashboard_read_only_series_the_operator_exports() {
    // A labelled family is exposed from its first sample on: record one of each.
    let metrics = chroma_sync_operator::metrics::Metrics::new();
    let took = std::time::Duration::from_millis(5);
    metrics.reconciled("SyncSource", took, Some("ChromaUnavailable"));
    metrics.chroma_call("create_source", "201", took);
    metrics.run_phase("Complete", "github", Some(took));
    metrics.source_missing("recreated");
    metrics.drift_checked("ok");
    let _ = metrics.limiter("operator");
    let exposition = metrics.render();
    let families: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut checked = 0;
    for file in [
        "deploy/helm/chroma-sync-operator/templates/prometheusrule.yaml",
        "deploy/helm/chroma-sync-operator/dashboards/chroma-sync-operator.json",
    ] {
        let text = read(file);
        let mut names = BTreeSet::new();
        for (at, _) in text.match_indices(['c', 'p']) {
            let rest = &text[at..];
            if !(rest.starts_with("chroma_sync_operator_") || rest.starts_with("process_")) {
                continue;
            }
            // Only whole identifiers: not the tail of a longer word.
            if text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.insert(&rest[..end]);
        }
        assert!(!names.is_empty(), "{file} names no series");
        for name in names {
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                families.contains(family),
                "{file} reads {name}, which the operator does not export"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "only {checked} series found in the rules and dashboard"
    );
}

/// The commands of README's shell blocks, one per pipeline stage: continuation lines joined,
/// heredoc bodies and comments left out, leading `VAR=value` assignments skipped.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut heredoc: Option<String> = None;
    let mut line = String::new();
    for raw in readme.lines() {
        // Fences indented under a list item count too.
        if raw.trim_start().starts_with("```") {
            in_block = !in_block && ["```sh", "```bash", "```shell"].contains(&raw.trim());
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(end) = &heredoc {
            if raw.trim() == end {
                heredoc = None;
            }
            continue;
        }
        if raw.trim_start().starts_with('#') {
            continue;
        }
        let code = raw.split(" #").next().unwrap_or_default();
        line.push_str(code.trim_end().trim_end_matches('\\'));
        line.push(' ');
        if code.trim_end().ends_with('\\') {
            continue;
        }
        if let Some(at) = line.find("<<") {
            let tag = line[at + 2..].trim_start_matches('-');
            let tag = tag.split_whitespace().next().unwrap_or_default();
            heredoc = Some(tag.trim_matches(['\'', '"']).to_owned());
        }
        // A command substitution (`X=$(cmd ...)`) runs its command as a stage of its own.
        let stages = line.replace("$(", "; ");
        for stage in stages.split(['|', ';', ')']).flat_map(|s| s.split("&&")) {
            let words = stage
                .split_whitespace()
                .map(|w| w.trim_matches(['"', '\'']))
                .filter(|w| !w.is_empty())
                .skip_while(|w| w.contains('=') && !w.starts_with('-'));
            if let Some(first) = words.take(1).next() {
                commands.push(first.to_owned());
            }
        }
        line.clear();
    }
    commands
}

/// Every command README tells a user to run is installed by the set-up (`make` targets install
/// what they need), is the shell's own, or is named under "Your tools" as the user's to bring.
#[test]
fn every_command_the_readme_runs_is_installed_or_named_as_the_users_own() {
    let readme = read("README.md");
    let at = readme
        .find("**Your tools.**")
        .expect("README names the user's own tools under **Your tools.**");
    let paragraph = readme[at..].split("\n\n").next().unwrap();
    let own: BTreeSet<String> = paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|w| w.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    // The shell's own words and POSIX tools.
    let shell = "cd mkdir cat echo export cp curl date sha256sum tar for do done if then fi";
    let shell: Vec<&str> = shell.split(' ').collect();
    let commands = readme_commands(&readme);
    assert!(commands.len() >= 10, "{commands:?}");
    for command in &commands {
        assert!(
            command == "make" || shell.contains(&command.as_str()) || own.contains(command),
            "README runs `{command}`: install it in tests/setup.sh or name it under **Your tools.**"
        );
    }
}
