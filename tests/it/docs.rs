//! docs/reference.md lists every flag of every command as `--help` prints it. For each command
//! `palisade --help` names (and each subcommand of those that have some), the section headed
//! ``## `palisade <command>` `` must list exactly the long flags of `<command> --help` (and their
//! short forms), with the same environment variable, and a default that starts with clap's.
//! `--help` and `--version` are left out.

use std::collections::BTreeMap;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const REFERENCE: &str = "docs/reference.md";

/// What one flag is, as `--help` prints it or the reference's table row says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Flag {
    short: Option<String>,
    env: Option<String>,
    default: Option<String>,
}

fn help(command: &[String]) -> String {
    let output = Command::new(BIN)
        .args(command)
        .arg("--help")
        .output()
        .expect("run palisade");
    assert!(
        output.status.success(),
        "palisade {} --help failed: {}",
        command.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The subcommands a help text lists under "Commands:", without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command that takes flags: `serve`, …, `netpol explain`, `certs generate`.
fn leaf_commands() -> Vec<Vec<String>> {
    let mut leaves = Vec::new();
    let mut todo = vec![Vec::new()];
    while let Some(command) = todo.pop() {
        let subs = subcommands(&help(&command));
        if subs.is_empty() {
            leaves.push(command);
        } else {
            for sub in subs {
                let mut next = command.clone();
                next.push(sub);
                todo.push(next);
            }
        }
    }
    leaves.sort();
    leaves
}

/// The text inside `[<key>: …]` in `text`, if any.
fn bracketed(text: &str, key: &str) -> Option<String> {
    let start = text.find(&format!("[{key}: "))? + key.len() + 3;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

/// The flags of a help text: only its option lines (indented by at most six spaces and starting
/// with `-`), never flags that a description names; the environment variable and default come
/// from the option's block, up to the next option line.
fn help_flags(help: &str) -> BTreeMap<String, Flag> {
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, Flag, String)> = None;
    let mut finish = |current: Option<(String, Flag, String)>| {
        if let Some((long, mut flag, block)) = current {
            flag.env = bracketed(&block, "env").map(|e| e.split('=').next().unwrap().to_owned());
            flag.default = bracketed(&block, "default");
            if long != "--help" && long != "--version" {
                flags.insert(long, flag);
            }
        }
    };
    for line in help.lines().skip_while(|l| l.trim_end() != "Options:") {
        let indent = line.len() - line.trim_start().len();
        if indent <= 6 && line.trim_start().starts_with('-') {
            finish(current.take());
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let long = tokens
                .iter()
                .find(|t| t.starts_with("--"))
                .expect("an option line names a long flag")
                .trim_end_matches(',')
                .to_owned();
            let short = tokens
                .iter()
                .take_while(|t| !t.starts_with("--"))
                .find(|t| t.starts_with('-'))
                .map(|t| t.trim_end_matches(',').to_owned());
            current = Some((
                long,
                Flag {
                    short,
                    ..Flag::default()
                },
                line.to_owned(),
            ));
        } else if let Some((_, _, block)) = current.as_mut() {
            block.push('\n');
            block.push_str(line);
        }
    }
    finish(current.take());
    flags
}

/// The words of a table cell written as code: `` `--listen` `` is `--listen`.
fn code_words(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The flags the reference lists for `command`: the table rows of its section, up to the next
/// `## ` heading; the first cell holds the flags, then the environment variable and the default.
fn documented_flags(doc: &str, command: &[String]) -> Result<BTreeMap<String, Flag>, String> {
    let heading = format!("## `palisade {}`", command.join(" "));
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    if lines.next().is_none() {
        return Err(format!("{REFERENCE} has no section {heading}"));
    }
    let mut flags = BTreeMap::new();
    for row in lines
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.len() < 5 || cells[1] == "flag" {
            continue;
        }
        let names = code_words(cells[1]);
        let env = code_words(cells[2]).into_iter().next();
        let default = Some(cells[3].replace('`', ""));
        let short = names.iter().find(|n| !n.starts_with("--")).cloned();
        for long in names.iter().filter(|n| n.starts_with("--")) {
            let flag = Flag {
                short: short.clone(),
                env: env.clone(),
                default: default.clone(),
            };
            if flags.insert(long.clone(), flag).is_some() {
                return Err(format!("{heading}: {long} is listed twice"));
            }
        }
    }
    Ok(flags)
}

/// What differs between the reference's section for `command` and its `--help`, one line each.
fn differences(doc: &str, command: &[String], help: &str) -> Vec<String> {
    let name = format!("palisade {}", command.join(" "));
    let documented = match documented_flags(doc, command) {
        Ok(flags) => flags,
        Err(problem) => return vec![problem],
    };
    let actual = help_flags(help);
    let mut problems = Vec::new();
    let missing: Vec<&str> = actual
        .keys()
        .filter(|f| !documented.contains_key(*f))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{name}: {REFERENCE} lacks {} (in --help)",
            missing.join(", ")
        ));
    }
    let extra: Vec<&str> = documented
        .keys()
        .filter(|f| !actual.contains_key(*f))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        problems.push(format!(
            "{name}: {REFERENCE} lists {}, which --help does not have",
            extra.join(", ")
        ));
    }
    for (long, real) in &actual {
        let Some(doc) = documented.get(long) else {
            continue;
        };
        if doc.short != real.short {
            problems.push(format!(
                "{name} {long}: short form {:?} in {REFERENCE}, {:?} in --help",
                doc.short, real.short
            ));
        }
        if doc.env != real.env {
            problems.push(format!(
                "{name} {long}: environment variable {:?} in {REFERENCE}, {:?} in --help",
                doc.env, real.env
            ));
        }
        if let Some(default) = &real.default {
            let default = default.replace('`', "");
            let written = doc.default.as_deref().unwrap_or("");
            if !written.starts_with(&default) {
                problems.push(format!(
                    "{name} {long}: default {written:?} in {REFERENCE}, {default:?} in --help"
                ));
            }
        }
    }
    problems
}

fn reference() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE))
        .expect("read docs/reference.md")
}

#[test]
fn the_reference_lists_every_flag_of_every_command_as_help_does() {
    let doc = reference();
    let commands = leaf_commands();
    for expected in [
        vec!["serve"],
        vec!["netpol", "explain"],
        vec!["certs", "generate"],
    ] {
        assert!(
            commands.iter().any(|c| *c == expected),
            "palisade --help no longer lists {expected:?}: {commands:?}"
        );
    }
    let mut problems = Vec::new();
    for command in &commands {
        problems.extend(differences(&doc, command, &help(command)));
    }
    // A section for a command that no longer exists is stale too.
    for line in doc.lines() {
        if let Some(name) = line
            .strip_prefix("## `palisade ")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            let words: Vec<String> = name.split(' ').map(str::to_owned).collect();
            if !commands.contains(&words) {
                problems.push(format!(
                    "{REFERENCE} documents `palisade {name}`, which --help does not list"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{REFERENCE} and --help differ:\n{}",
        problems.join("\n")
    );
}

/// The check fails when the reference misses a flag, lists one that does not exist, or names
/// another environment variable or default.
#[test]
fn the_reference_check_names_what_is_missing_or_wrong() {
    let doc = reference();
    let serve = vec!["serve".to_owned()];
    let help = help(&serve);
    assert_eq!(differences(&doc, &serve, &help), Vec::<String>::new());

    let row = doc
        .lines()
        .find(|l| l.starts_with("| `--tls-secret` |"))
        .expect("the --tls-secret row");
    let without = doc.replace(&format!("{row}\n"), "");
    let problems = differences(&without, &serve, &help);
    assert!(
        problems.len() == 1
            && problems[0].contains("lacks --tls-secret")
            && problems[0].starts_with("palisade serve:"),
        "{problems:?}"
    );

    let with_extra = doc.replace(
        row,
        &format!("{row}\n| `--no-such-flag` | — | none | nothing |"),
    );
    let problems = differences(&with_extra, &serve, &help);
    assert!(
        problems.len() == 1 && problems[0].contains("lists --no-such-flag"),
        "{problems:?}"
    );

    let wrong = doc.replace(
        "| `--listen` | `PALISADE_LISTEN` | `0.0.0.0:8443` |",
        "| `--listen` | `PALISADE_LISTENER` | `0.0.0.0:9443` |",
    );
    let problems = differences(&wrong, &serve, &help);
    assert!(
        problems.len() == 2
            && problems.iter().any(|p| p.contains("PALISADE_LISTENER"))
            && problems.iter().any(|p| p.contains("0.0.0.0:9443")),
        "{problems:?}"
    );

    let problems = differences(&doc, &["nothing".to_owned()], &help);
    assert_eq!(
        problems,
        [format!("{REFERENCE} has no section ## `palisade nothing`")]
    );
}

#[test]
fn help_flags_come_from_option_lines_only() {
    let help = "Usage: palisade x [OPTIONS]\n\nOptions:\n  -f, --filename <INPUTS>  Objects (see --policies) [default: a]\n      --policies <P>\n          The bundle [default: policies, unless `-f` gives the policies]\n          \n          [env: PALISADE_POLICIES=/somewhere]\n\n          Possible values:\n          - vm: --not-a-flag\n  -h, --help  Print help\n";
    let flags = help_flags(help);
    assert_eq!(
        flags.keys().collect::<Vec<_>>(),
        ["--filename", "--policies"]
    );
    assert_eq!(flags["--filename"].short.as_deref(), Some("-f"));
    assert_eq!(flags["--filename"].default.as_deref(), Some("a"));
    assert_eq!(
        flags["--policies"].env.as_deref(),
        Some("PALISADE_POLICIES")
    );
    assert_eq!(
        flags["--policies"].default.as_deref(),
        Some("policies, unless `-f` gives the policies")
    );
}

/// docs/matrix.md's worked example: the three-tier guide, its matrix, and the shortcut a pull
/// request adds. The pictures, the diff and the denial the page shows are what Palisade prints.
#[test]
fn the_matrix_page_shows_what_palisade_prints() {
    let doc = std::fs::read_to_string(crate::common::repo_path("docs/matrix.md")).unwrap();
    let guides = [
        "tests/data/guides/default-deny.yaml",
        "tests/data/guides/allow-dns.yaml",
        "tests/data/guides/three-tier",
        "tests/data/netpol/three-tier-cluster.yaml",
    ];
    let shortcut = "tests/data/guides/three-tier-shortcut.yaml";
    let matrix = "tests/data/guides/matrices/three-tier.yaml";
    let block = |after: &str, fence: &str| -> String {
        doc.split(after)
            .nth(1)
            .unwrap_or_else(|| panic!("docs/matrix.md has no {after:?}"))
            .split(fence)
            .nth(1)
            .and_then(|rest| rest.split("```\n").next())
            .unwrap()
            .to_owned()
    };
    // The picture.
    let mut args = vec!["netpol", "explain"];
    for g in guides.iter().chain([&shortcut]) {
        args.extend(["-f", g]);
    }
    args.extend(["--matrix", matrix, "-n", "payments", "-o", "mermaid"]);
    let (code, picture, err) = crate::common::palisade_cli(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(block("\n## Seeing it\n", "```mermaid\n"), picture);
    // The diff, after its command line.
    let mut args = vec!["netpol", "diff"];
    for g in guides {
        args.extend(["--base", g]);
    }
    for g in guides.iter().chain([&shortcut]) {
        args.extend(["--head", g]);
    }
    args.extend(["--matrix", matrix]);
    let (code, diff, err) = crate::common::palisade_cli(&args);
    assert_eq!(code, 1, "{err}");
    let shown = block("\n## In CI: `palisade netpol diff`\n", "```\n");
    let shown = shown.split_once('\n').unwrap().1;
    assert_eq!(shown, diff);
    // The denial of the shortcut's first policy, through the one decision path.
    let denial = block("\n## Admission\n", "```\n");
    let denial = denial.trim_end();
    let mut objects = Vec::new();
    for g in guides {
        objects.extend(
            palisade::manifest::files::read_path(&crate::common::repo_path(g))
                .unwrap()
                .into_iter()
                .map(|d| d.value),
        );
    }
    let inventory = palisade::inventory::Inventory::from_objects(objects);
    let bundle = crate::matrix::bundle("three-tier");
    let policy = palisade::manifest::files::read_path(&crate::common::repo_path(shortcut)).unwrap()
        [0]
    .value
    .clone();
    let says = crate::matrix::matrix_says(
        &bundle,
        &inventory,
        &crate::matrix::review("CREATE", &policy, None),
    );
    assert!(says.iter().any(|m| m == denial), "{denial}\n{says:#?}");
}
