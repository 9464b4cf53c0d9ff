//! `palisade netpol diff`: what a change of manifests (a pull request against its base branch)
//! does to reachability, and whether it breaks a communication matrix (see
//! [`crate::netpol::diff`]).

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::args::read_inputs;
use crate::manifest::Document;
use crate::netpol::World;
use crate::netpol::diff::{self, Diff};
use crate::netpol::flows::Net;
use crate::netpol::graph::{self, EdgeStyle};
use crate::netpol::judge::Universe;
use crate::netpol::matrix::{KIND, Matrix};

#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The manifests before the change (a checkout of the base branch): files, directories
    /// (repeatable). NetworkPolicies, Namespaces and Pods are read; other kinds are ignored.
    #[arg(long, required = true)]
    pub base: Vec<String>,
    /// The manifests after the change (the pull request's checkout), as --base.
    #[arg(long, required = true)]
    pub head: Vec<String>,
    /// Files or directories holding PalisadeCommunicationMatrix constraints to judge the change
    /// against (repeatable); matrices among the --head manifests are read too.
    #[arg(long)]
    pub matrix: Vec<String>,
    /// Only flows with an end in these namespaces (repeatable); default: every namespace.
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    /// How the result is printed.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub format: DiffFormat,
}

/// `netpol diff -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// One line per flow added (+) or removed (-), then what breaks a matrix (!): a flow it
    /// forbids, or a required flow blocked.
    Text,
    /// `{"changes": [...], "breaches": [...], "blocked": [...], "errors": [...]}`.
    Json,
    /// A Graphviz graph: added flows green, removed red and dashed, forbidden red and bold.
    Dot,
    /// A Mermaid flowchart, styled as the DOT graph.
    Mermaid,
}

/// The matrices among `docs`.
pub fn matrices(docs: &[Document]) -> Result<Vec<Matrix>, String> {
    docs.iter()
        .filter(|d| d.kind() == KIND)
        .map(|d| {
            Matrix::parse(d.name(), &d.value["spec"]["parameters"])
                .map_err(|e| format!("{} ({KIND} {:?}): {e}", d.origin, d.name()))
        })
        .collect()
}

impl DiffArgs {
    pub(crate) fn run(self) -> ExitCode {
        match self.diff() {
            Ok((text, breaks)) => {
                let mut out = std::io::stdout().lock();
                match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
                ExitCode::from(u8::from(breaks))
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    }

    /// The printed result, and whether a flow the change adds breaks a matrix.
    pub fn diff(&self) -> Result<(String, bool), String> {
        let base_docs = read_inputs(&self.base)?;
        let head_docs = read_inputs(&self.head)?;
        let base = World::read(&base_docs)?;
        let head = World::read(&head_docs)?;
        let mut matrix_docs = head_docs;
        if !self.matrix.is_empty() {
            matrix_docs.extend(read_inputs(&self.matrix)?);
        }
        let matrices = matrices(&matrix_docs)?;
        if !self.matrix.is_empty() && matrices.is_empty() {
            return Err(format!(
                "--matrix {}: no {KIND} constraint there",
                self.matrix.join(", ")
            ));
        }
        let universe = Universe::default();
        let (b, h) = (
            Net::of_world(&base, &universe),
            Net::of_world(&head, &universe),
        );
        let d = diff::diff(&b, &h, &matrices, &self.namespaces, None);
        if !d.errors.is_empty() {
            return Err(d.errors.join("; "));
        }
        let breaks = !d.breaches.is_empty() || !d.blocked.is_empty();
        let text = match self.format {
            DiffFormat::Text => text(&d),
            DiffFormat::Json => {
                let mut s = serde_json::to_string_pretty(&d).map_err(|e| e.to_string())?;
                s.push('\n');
                s
            }
            DiffFormat::Dot => picture(&d).to_dot(),
            DiffFormat::Mermaid => picture(&d).to_mermaid(),
        };
        Ok((text, breaks))
    }
}

fn text(d: &Diff) -> String {
    let mut out = String::new();
    for c in &d.changes {
        if !c.added.is_empty() {
            out.push_str(&format!(
                "+ {} -> {}  {}  ({})\n",
                c.from.text(),
                c.to.text(),
                c.added,
                c.opened_by.join(", ")
            ));
        }
        if !c.removed.is_empty() {
            out.push_str(&format!(
                "- {} -> {}  {}  (was {})\n",
                c.from.text(),
                c.to.text(),
                c.removed,
                c.was_opened_by.join(", ")
            ));
        }
    }
    for b in &d.breaches {
        out.push_str(&format!("! {}\n", b.message()));
    }
    for b in &d.blocked {
        out.push_str(&format!("! {}\n", b.message()));
    }
    let added = d.changes.iter().filter(|c| !c.added.is_empty()).count();
    let removed = d.changes.iter().filter(|c| !c.removed.is_empty()).count();
    out.push_str(&format!(
        "{added} flows added, {removed} removed; {} against a communication matrix\n",
        d.breaches.len() + d.blocked.len()
    ));
    out
}

fn picture(d: &Diff) -> graph::Graph {
    let mut edges = Vec::new();
    for c in &d.changes {
        if !c.added.is_empty() {
            edges.push((&c.from, &c.to, &c.added, EdgeStyle::Added));
        }
        if !c.removed.is_empty() {
            edges.push((&c.from, &c.to, &c.removed, EdgeStyle::Removed));
        }
    }
    let mut g = graph::from_flows(&edges);
    g.forbid(&d.breaches);
    g
}
