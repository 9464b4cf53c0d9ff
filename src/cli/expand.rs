//! `palisade expand`, as `gator expand`: reads objects, ExpansionTemplates and mutators, and
//! prints the resultants the objects expand into (what the webhook judges on their behalf).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use super::args::read_inputs;
use crate::admission::Review;
use crate::bundle::MUTATIONS_GROUP;
use crate::expansion::{EXPANSION_GROUP, Expansions, KIND};
use crate::manifest::Document;
use crate::mutation::{Mutator, Mutators};
use crate::object::ObjectRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExpandFormat {
    Yaml,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ExpandArgs {
    /// Objects, ExpansionTemplates, mutators and Namespaces (for the mutators'
    /// namespaceSelectors): a file, a directory, or - for standard input (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub inputs: Vec<String>,
    /// Output format (gator's --format).
    #[arg(
        short = 'o',
        long = "output",
        alias = "format",
        value_enum,
        default_value = "yaml"
    )]
    pub output: ExpandFormat,
    /// Write the resultants to this file instead of standard output (overwritten).
    #[arg(long = "outputfile")]
    pub output_file: Option<PathBuf>,
}

impl ExpandArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let docs = read_inputs(&self.inputs).map_err(anyhow::Error::msg)?;
        if docs.is_empty() {
            bail!("no input data identified in {}", self.inputs.join(", "));
        }
        let resultants = expand(&docs).map_err(anyhow::Error::msg)?;
        let text = render(&resultants, self.output)?;
        match &self.output_file {
            None => println!("{text}"),
            Some(path) => {
                std::fs::write(path, format!("{text}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("Writing output to file: {}", path.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The resultants of every document, in gator's order (by name, apiVersion and kind,
/// descending). Each object is first mutated as an `Original` object, as gator does.
pub fn expand(docs: &[Document]) -> Result<Vec<Value>, String> {
    let expansions = Expansions::from_documents(docs).map_err(|e| e.to_string())?;
    let mut mutators = Vec::new();
    let mut problems = Vec::new();
    for doc in docs.iter().filter(|d| d.group() == MUTATIONS_GROUP) {
        match Mutator::parse(doc) {
            Ok(m) => mutators.push(m),
            Err(e) => problems.push(format!("{}: {e}", doc.describe())),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let mutators = Mutators::new(mutators);
    let namespaces: Vec<&Value> = docs
        .iter()
        .filter(|d| d.kind() == "Namespace" && d.group().is_empty())
        .map(|d| &d.value)
        .collect();
    let mut out = Vec::new();
    for doc in docs {
        if doc.group() == EXPANSION_GROUP && doc.kind() == KIND {
            continue;
        }
        let object_ref = doc.object_ref();
        if !expansions.expands(&object_ref.group, &object_ref.version, &object_ref.kind) {
            continue;
        }
        let namespace = namespaces
            .iter()
            .copied()
            .find(|n| n["metadata"]["name"].as_str() == Some(object_ref.namespace.as_str()));
        let review = Review::from_object(doc.value.clone());
        let base = mutators
            .mutate(&review, namespace)
            .map_err(|e| {
                format!(
                    "{}: cannot mutate it before expanding it: {e}",
                    doc.describe()
                )
            })?
            .unwrap_or_else(|| doc.value.clone());
        let resultants = expansions
            .expand(
                &base,
                (&object_ref.group, &object_ref.version, &object_ref.kind),
                &object_ref.namespace,
                &mutators,
                namespace,
            )
            .map_err(|e| format!("{}: cannot expand it: {e}", doc.describe()))?;
        out.extend(resultants.into_iter().map(|r| r.object));
    }
    let key = |v: &Value| {
        let r = ObjectRef::of(v);
        format!("{}{}{}", r.name, r.api_version(), r.kind)
    };
    out.sort_by_key(|v| std::cmp::Reverse(key(v)));
    Ok(out)
}

/// YAML documents separated by `---`, or JSON objects, as gator prints them.
pub fn render(resultants: &[Value], format: ExpandFormat) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for r in resultants {
        parts.push(match format {
            ExpandFormat::Yaml => yaml_serde::to_string(r)?,
            ExpandFormat::Json => serde_json::to_string_pretty(r)? + "\n",
        });
    }
    Ok(parts.join("---\n"))
}
