//! `palisade verify`: runs gator Suites (test.gatekeeper.sh/v1alpha1), through the same policy
//! evaluation as the webhook.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::admission::Review;
use crate::inventory::Inventory;
use crate::policy::source::{self, Document};
use crate::policy::{EngineOptions, PolicySet, Violation};

pub const SUITE_API_VERSION: &str = "test.gatekeeper.sh/v1alpha1";

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SuiteError {
    pub file: PathBuf,
    pub message: String,
}

/// How many violations an assertion expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// At least one.
    Yes,
    No,
    Exactly(u64),
}

#[derive(Debug, Clone)]
pub struct Assertion {
    pub violations: Expect,
    pub message: Option<Regex>,
}

impl Assertion {
    /// `None` when it holds, else what went wrong.
    pub fn check(&self, violations: &[Violation]) -> Option<String> {
        let n = violations
            .iter()
            .filter(|v| {
                self.message
                    .as_ref()
                    .is_none_or(|re| re.is_match(&v.message))
            })
            .count() as u64;
        let ok = match self.violations {
            Expect::Yes => n > 0,
            Expect::No => n == 0,
            Expect::Exactly(want) => n == want,
        };
        if ok {
            return None;
        }
        let want = match self.violations {
            Expect::Yes => "at least 1 violation".to_owned(),
            Expect::No => "no violations".to_owned(),
            Expect::Exactly(k) => format!("exactly {k} violation{}", if k == 1 { "" } else { "s" }),
        };
        let filter = self
            .message
            .as_ref()
            .map(|re| format!(" matching /{}/", re.as_str()))
            .unwrap_or_default();
        let got: Vec<String> = violations
            .iter()
            .map(|v| format!("[{}] {}", v.constraint, v.message))
            .collect();
        Some(format!(
            "expected {want}{filter}, got {n}{}",
            if got.is_empty() {
                String::new()
            } else {
                format!(" (all violations: {})", got.join("; "))
            }
        ))
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub object: PathBuf,
    pub inventory: Vec<PathBuf>,
    pub assertions: Vec<Assertion>,
    pub skip: bool,
}

#[derive(Debug, Clone)]
pub struct Test {
    pub name: String,
    pub template: PathBuf,
    pub constraint: PathBuf,
    pub cases: Vec<Case>,
    pub skip: bool,
    /// The template or constraint is expected to be rejected.
    pub invalid: bool,
}

#[derive(Debug, Clone)]
pub struct Suite {
    pub file: PathBuf,
    pub name: String,
    pub tests: Vec<Test>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub suite: PathBuf,
    pub test: String,
    pub case: String,
    pub outcome: Outcome,
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tag, why) = match &self.outcome {
            Outcome::Pass => ("ok  ", String::new()),
            Outcome::Skip => ("skip", String::new()),
            Outcome::Fail(why) => ("FAIL", format!(": {why}")),
        };
        write!(
            f,
            "{tag} {} / {} / {}{why}",
            self.suite.display(),
            self.test,
            self.case
        )
    }
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    pub fn of(results: &[CaseResult]) -> Self {
        let mut s = Self::default();
        for r in results {
            match r.outcome {
                Outcome::Pass => s.passed += 1,
                Outcome::Fail(_) => s.failed += 1,
                Outcome::Skip => s.skipped += 1,
            }
        }
        s
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// The Suite files at `path`: the file itself, or every Suite under a directory.
pub fn find_suites(path: &Path) -> Result<Vec<PathBuf>, SuiteError> {
    let err = |e: source::SourceError| SuiteError {
        file: path.to_path_buf(),
        message: e.to_string(),
    };
    if !path.is_dir() {
        if !path.exists() {
            return Err(SuiteError {
                file: path.to_path_buf(),
                message: "no such file or directory".into(),
            });
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut suites = Vec::new();
    for file in source::manifest_files(path).map_err(err)? {
        // Only files that hold a Suite; templates and objects live beside them. A file that does
        // not parse is not a Suite here; `parse_suite` reports it when it is named directly.
        let is_suite =
            source::read_file(&file).is_ok_and(|docs| docs.iter().any(|d| d.kind() == "Suite"));
        if is_suite {
            suites.push(file);
        }
    }
    if suites.is_empty() {
        return Err(SuiteError {
            file: path.to_path_buf(),
            message: "no Suite files found (kind: Suite, apiVersion: test.gatekeeper.sh/v1alpha1)"
                .into(),
        });
    }
    Ok(suites)
}

/// Parses a Suite file; every error names the field.
pub fn parse_suite(file: &Path) -> Result<Suite, SuiteError> {
    let fail = |message: String| SuiteError {
        file: file.to_path_buf(),
        message,
    };
    let docs = source::read_file(file).map_err(|e| fail(e.to_string()))?;
    let doc = match docs.as_slice() {
        [doc] => doc,
        _ => {
            return Err(fail(format!(
                "expected one Suite document, found {}",
                docs.len()
            )));
        }
    };
    if doc.kind() != "Suite" || doc.api_version() != SUITE_API_VERSION {
        return Err(fail(format!(
            "expected kind Suite, apiVersion {SUITE_API_VERSION}; found kind {:?}, apiVersion {:?}",
            doc.kind(),
            doc.api_version()
        )));
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let v = &doc.value;
    let tests_v = v["tests"]
        .as_array()
        .ok_or_else(|| fail("tests: required, a list of tests".into()))?;
    let mut tests = Vec::new();
    for (ti, t) in tests_v.iter().enumerate() {
        let at = format!("tests[{ti}]");
        let path_field = |key: &str| -> Result<PathBuf, SuiteError> {
            t[key]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(|s| base.join(s))
                .ok_or_else(|| {
                    fail(format!(
                        "{at}.{key}: required, a path relative to the suite"
                    ))
                })
        };
        let mut cases = Vec::new();
        for (ci, c) in t["cases"].as_array().into_iter().flatten().enumerate() {
            let at = format!("{at}.cases[{ci}]");
            let object = c["object"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(|s| base.join(s))
                .ok_or_else(|| {
                    fail(format!(
                        "{at}.object: required, a path to the object to review"
                    ))
                })?;
            let inventory = match &c["inventory"] {
                Value::Null => Vec::new(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(|s| base.join(s))
                            .ok_or_else(|| fail(format!("{at}.inventory: a list of paths")))
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(fail(format!("{at}.inventory: a list of paths"))),
            };
            let mut assertions = Vec::new();
            for (ai, a) in c["assertions"].as_array().into_iter().flatten().enumerate() {
                let at = format!("{at}.assertions[{ai}]");
                let violations = match &a["violations"] {
                    Value::Null => Expect::Yes,
                    Value::String(s) if s == "yes" => Expect::Yes,
                    Value::String(s) if s == "no" => Expect::No,
                    Value::Bool(true) => Expect::Yes,
                    Value::Bool(false) => Expect::No,
                    Value::Number(n) if n.as_u64().is_some() => {
                        Expect::Exactly(n.as_u64().unwrap_or(0))
                    }
                    Value::String(s) if s.parse::<u64>().is_ok() => {
                        Expect::Exactly(s.parse().unwrap_or(0))
                    }
                    other => {
                        return Err(fail(format!(
                            "{at}.violations: {other} is not yes, no or a number"
                        )));
                    }
                };
                let message = match &a["message"] {
                    Value::Null => None,
                    Value::String(s) => Some(Regex::new(s).map_err(|e| {
                        fail(format!("{at}.message: invalid regular expression: {e}"))
                    })?),
                    _ => {
                        return Err(fail(format!(
                            "{at}.message: must be a regular expression string"
                        )));
                    }
                };
                assertions.push(Assertion {
                    violations,
                    message,
                });
            }
            if assertions.is_empty() {
                assertions.push(Assertion {
                    violations: Expect::Yes,
                    message: None,
                });
            }
            cases.push(Case {
                name: c["name"]
                    .as_str()
                    .unwrap_or(&format!("case {ci}"))
                    .to_owned(),
                object,
                inventory,
                assertions,
                skip: c["skip"] == true,
            });
        }
        tests.push(Test {
            name: t["name"]
                .as_str()
                .unwrap_or(&format!("test {ti}"))
                .to_owned(),
            template: path_field("template")?,
            constraint: path_field("constraint")?,
            cases,
            skip: t["skip"] == true,
            invalid: t["invalid"] == true,
        });
    }
    Ok(Suite {
        file: file.to_path_buf(),
        name: doc.name().to_owned(),
        tests,
    })
}

/// Runs every test of a suite.
pub fn run_suite(suite: &Suite, options: &EngineOptions) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for test in &suite.tests {
        let result = |case: &str, outcome: Outcome| CaseResult {
            suite: suite.file.clone(),
            test: test.name.clone(),
            case: case.to_owned(),
            outcome,
        };
        if test.skip {
            results.extend(test.cases.iter().map(|c| result(&c.name, Outcome::Skip)));
            if test.cases.is_empty() {
                results.push(result("(test)", Outcome::Skip));
            }
            continue;
        }
        let loaded = load_pair(test, options);
        if test.invalid {
            let outcome = match loaded {
                Err(_) => Outcome::Pass,
                Ok(_) => Outcome::Fail(
                    "expected the template or constraint to be rejected, but it loaded".into(),
                ),
            };
            results.push(result("(invalid)", outcome));
            continue;
        }
        let set = match loaded {
            Ok(set) => set,
            Err(e) => {
                let why = format!("cannot load template and constraint: {e}");
                results.extend(
                    test.cases
                        .iter()
                        .map(|c| result(&c.name, Outcome::Fail(why.clone()))),
                );
                if test.cases.is_empty() {
                    results.push(result("(load)", Outcome::Fail(why)));
                }
                continue;
            }
        };
        for case in &test.cases {
            let outcome = if case.skip {
                Outcome::Skip
            } else {
                match run_case(&set, case) {
                    Ok(None) => Outcome::Pass,
                    Ok(Some(why)) | Err(why) => Outcome::Fail(why),
                }
            };
            results.push(result(&case.name, outcome));
        }
    }
    results
}

fn load_pair(test: &Test, options: &EngineOptions) -> Result<PolicySet, String> {
    let mut docs = Vec::new();
    for path in [&test.template, &test.constraint] {
        docs.extend(source::read_file(path).map_err(|e| e.to_string())?);
    }
    PolicySet::from_documents(docs, options, Arc::new(Inventory::default()))
        .map_err(|e| e.to_string())
}

/// `Ok(None)` when every assertion holds.
fn run_case(set: &PolicySet, case: &Case) -> Result<Option<String>, String> {
    let review = review_of_file(&case.object)?;
    let set = if case.inventory.is_empty() {
        set.clone()
    } else {
        let mut objects = Vec::new();
        for path in &case.inventory {
            objects.extend(
                source::read_path(path)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|d| d.value),
            );
        }
        set.with_inventory(Arc::new(Inventory::from_objects(objects)))?
    };
    let violations = set.evaluate(&review);
    let failures: Vec<String> = case
        .assertions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            a.check(&violations)
                .map(|why| format!("assertions[{i}]: {why}"))
        })
        .collect();
    Ok((!failures.is_empty()).then(|| failures.join("; ")))
}

/// The review for an object file: an AdmissionReview's request, or a bare object.
pub fn review_of_file(path: &Path) -> Result<Review, String> {
    let docs = source::read_file(path).map_err(|e| e.to_string())?;
    match docs.as_slice() {
        [doc] => Ok(review_of(doc)),
        _ => Err(format!(
            "{}: expected exactly one object, found {}",
            path.display(),
            docs.len()
        )),
    }
}

/// An AdmissionReview document becomes its request; anything else is reviewed as a bare object.
pub fn review_of(doc: &Document) -> Review {
    if doc.kind() == "AdmissionReview" && doc.value["request"].is_object() {
        Review::from_request_json(doc.value["request"].clone())
    } else {
        Review::from_object(doc.value.clone())
    }
}

/// Runs every suite at `path`.
pub fn run_path(path: &Path, options: &EngineOptions) -> Result<Vec<CaseResult>, SuiteError> {
    let mut results = Vec::new();
    for file in find_suites(path)? {
        let suite = parse_suite(&file)?;
        results.extend(run_suite(&suite, options));
    }
    Ok(results)
}
