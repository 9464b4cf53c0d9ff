//! gator's Suites (`test.gatekeeper.sh/v1alpha1`): the model, and the runner that takes every
//! case through the same decision path as the webhook, without exempt namespaces, as gator has
//! none. `palisade verify` prints what [`run_path`] returns.
//!
//! [`parse_suite`] reads a [`Suite`] of [`SuiteTest`]s and their [`Case`]s; [`run_suite`] gives
//! one [`CaseResult`] per case, and [`Summary`] counts them.

use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::admission::{Endpoint, Review};
use crate::bundle::Bundle;
use crate::decide::Decider;
use crate::inventory::Inventory;
use crate::manifest::Document;
use crate::manifest::files;
use crate::policy::{EngineOptions, Violation};

/// The apiVersion of a Suite.
pub const SUITE_API_VERSION: &str = "test.gatekeeper.sh/v1alpha1";

/// A Suite that cannot be found or read: which file, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SuiteError {
    /// The Suite file, or the path searched.
    pub file: PathBuf,
    /// What is wrong; a field names its path (`tests[0].cases[1].object`).
    pub message: String,
}

/// How many violations an assertion expects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawExpect")]
pub enum Expect {
    /// At least one.
    Yes,
    /// None.
    No,
    /// Exactly this many.
    Exactly(u64),
}

/// `violations:` as gator reads it: yes, no, a count, or the count as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawExpect {
    Bool(bool),
    Count(u64),
    Text(String),
    Other(serde_json::Value),
}

impl TryFrom<RawExpect> for Expect {
    type Error = String;

    fn try_from(raw: RawExpect) -> Result<Self, String> {
        match raw {
            RawExpect::Bool(true) => Ok(Expect::Yes),
            RawExpect::Bool(false) => Ok(Expect::No),
            RawExpect::Count(n) => Ok(Expect::Exactly(n)),
            RawExpect::Text(s) if s == "yes" => Ok(Expect::Yes),
            RawExpect::Text(s) if s == "no" => Ok(Expect::No),
            RawExpect::Text(s) => s
                .parse()
                .map(Expect::Exactly)
                .map_err(|_| format!("{s:?} is not yes, no or a number")),
            RawExpect::Other(v) => Err(format!("{v} is not yes, no or a number")),
        }
    }
}

/// A regular expression read from a Suite.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Pattern(pub Regex);

impl TryFrom<String> for Pattern {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Regex::new(&s)
            .map(Pattern)
            .map_err(|e| format!("invalid regular expression: {e}"))
    }
}

/// One `assertions` entry of a case: how many violations, of those whose message matches, the
/// review must have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    /// `violations` (`yes` when absent).
    #[serde(default = "yes")]
    pub violations: Expect,
    /// `message`: only violations whose message this matches (anywhere in it) are counted.
    #[serde(default)]
    pub message: Option<Pattern>,
}

fn yes() -> Expect {
    Expect::Yes
}

impl Assertion {
    /// `None` when it holds, else what went wrong.
    pub fn check(&self, violations: &[Violation]) -> Option<String> {
        let n = violations
            .iter()
            .filter(|v| {
                self.message
                    .as_ref()
                    .is_none_or(|re| re.0.is_match(&v.message))
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
            .map(|re| format!(" matching /{}/", re.0.as_str()))
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

/// A Suite file as written. Unknown fields are errors: a misspelt `assertions` would otherwise
/// make every case pass.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SuiteFile {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: serde_json::Value,
    #[serde(default)]
    tests: Option<Vec<TestFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    constraint: Option<String>,
    /// ExpansionTemplates the cases' objects are expanded with, as gator's `expansion:`.
    #[serde(default)]
    expansion: Option<String>,
    #[serde(default)]
    cases: Vec<CaseFile>,
    #[serde(default)]
    skip: bool,
    #[serde(default)]
    invalid: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    inventory: Vec<String>,
    #[serde(default)]
    assertions: Vec<Assertion>,
    #[serde(default)]
    skip: bool,
}

/// One case of a test: an object reviewed, and what must hold of its violations.
#[derive(Debug, Clone)]
pub struct Case {
    /// `name` (`case <index>` when absent).
    pub name: String,
    /// `object`: the object, or an AdmissionReview, to review (relative paths are resolved against
    /// the Suite's directory, as are the others).
    pub object: PathBuf,
    /// `inventory`: files of objects the policies may look up.
    pub inventory: Vec<PathBuf>,
    /// `assertions`; one that expects at least one violation when the case gives none.
    pub assertions: Vec<Assertion>,
    /// `skip`: the case is reported as skipped.
    pub skip: bool,
}

/// One gator test: a template, a constraint and the cases run against them.
#[derive(Debug, Clone)]
pub struct SuiteTest {
    /// `name` (`test <index>` when absent).
    pub name: String,
    /// `template`: the ConstraintTemplate file.
    pub template: PathBuf,
    /// `constraint`: the Constraint file.
    pub constraint: PathBuf,
    /// A file of ExpansionTemplates, as gator's `expansion:`.
    pub expansion: Option<PathBuf>,
    /// `cases`.
    pub cases: Vec<Case>,
    /// `skip`: every case is reported as skipped.
    pub skip: bool,
    /// The template or constraint is expected to be rejected.
    pub invalid: bool,
}

/// A Suite file, read.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The file it was read from.
    pub file: PathBuf,
    /// `metadata.name` (empty when absent).
    pub name: String,
    /// `tests`.
    pub tests: Vec<SuiteTest>,
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held (for an `invalid` test: the template or constraint was rejected).
    Pass,
    /// It failed, and why.
    Fail(String),
    /// It was skipped.
    Skip,
}

/// The outcome of one case, and where the case is.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The Suite file.
    pub suite: PathBuf,
    /// The test's name.
    pub test: String,
    /// The case's name, or `(invalid)`, `(load)` or `(test)` for a result of the test as a whole.
    pub case: String,
    /// How it ended.
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
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases skipped.
    pub skipped: usize,
}

impl Summary {
    /// Counts the outcomes of `results`.
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
    let err = |e: files::FileError| SuiteError {
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
    for file in files::manifest_files(path).map_err(err)? {
        // Only files that hold a Suite; templates and objects live beside them. A file that does
        // not parse is not a Suite here; `parse_suite` reports it when it is named directly.
        let is_suite =
            files::read_file(&file).is_ok_and(|docs| docs.iter().any(|d| d.kind() == "Suite"));
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
    let docs = files::read_file(file).map_err(|e| fail(e.to_string()))?;
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
    let parsed: SuiteFile = serde_path_to_error::deserialize(&doc.value)
        .map_err(|e| fail(format!("{}: {}", e.path(), e.inner())))?;
    let SuiteFile {
        metadata, tests, ..
    } = parsed;
    let tests_v = tests.ok_or_else(|| fail("tests: required, a list of tests".into()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut tests = Vec::new();
    for (ti, t) in tests_v.into_iter().enumerate() {
        let at = format!("tests[{ti}]");
        let path = |value: Option<String>, field: &str, what: &str| {
            value
                .filter(|s| !s.is_empty())
                .map(|s| base.join(s))
                .ok_or_else(|| fail(format!("{at}.{field}: required, {what}")))
        };
        let mut cases = Vec::new();
        for (ci, c) in t.cases.into_iter().enumerate() {
            let object = path(
                c.object,
                &format!("cases[{ci}].object"),
                "a path to the object to review",
            )?;
            let mut assertions = c.assertions;
            if assertions.is_empty() {
                assertions.push(Assertion {
                    violations: Expect::Yes,
                    message: None,
                });
            }
            cases.push(Case {
                name: c.name.unwrap_or_else(|| format!("case {ci}")),
                object,
                inventory: c.inventory.iter().map(|p| base.join(p)).collect(),
                assertions,
                skip: c.skip,
            });
        }
        tests.push(SuiteTest {
            name: t.name.unwrap_or_else(|| format!("test {ti}")),
            template: path(t.template, "template", "a path relative to the suite")?,
            constraint: path(t.constraint, "constraint", "a path relative to the suite")?,
            expansion: t.expansion.filter(|s| !s.is_empty()).map(|s| base.join(s)),
            cases,
            skip: t.skip,
            invalid: t.invalid,
        });
    }
    Ok(Suite {
        file: file.to_path_buf(),
        name: metadata["name"].as_str().unwrap_or_default().to_owned(),
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
        let bundle = match loaded {
            Ok(bundle) => bundle,
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
                match run_case(&bundle, case) {
                    Ok(None) => Outcome::Pass,
                    Ok(Some(why)) | Err(why) => Outcome::Fail(why),
                }
            };
            results.push(result(&case.name, outcome));
        }
    }
    results
}

fn load_pair(test: &SuiteTest, options: &EngineOptions) -> Result<Bundle, String> {
    let mut docs = Vec::new();
    for path in [&test.template, &test.constraint] {
        docs.extend(files::read_file(path).map_err(|e| e.to_string())?);
    }
    if let Some(path) = &test.expansion {
        let expansions = files::read_file(path).map_err(|e| e.to_string())?;
        if expansions.is_empty() {
            return Err(format!(
                "expansion {}: holds no ExpansionTemplate",
                path.display()
            ));
        }
        // As gator: the file holds ExpansionTemplates only.
        if let Some(other) = expansions.iter().find(|d| {
            d.group() != crate::expansion::EXPANSION_GROUP || d.kind() != crate::expansion::KIND
        }) {
            return Err(format!(
                "expansion: {} is not an ExpansionTemplate (apiVersion expansion.gatekeeper.sh/v1beta1); the expansion file holds ExpansionTemplates only",
                other.describe()
            ));
        }
        docs.extend(expansions);
    }
    Bundle::from_documents(docs, options).map_err(|e| e.to_string())
}

/// `Ok(None)` when every assertion holds.
fn run_case(bundle: &Bundle, case: &Case) -> Result<Option<String>, String> {
    let review = review_of_file(&case.object)?;
    let objects = files::read_objects(&case.inventory).map_err(|e| e.to_string())?;
    let inventory = Inventory::from_objects(objects);
    let violations = Decider::without_exemptions()
        .decide(
            bundle,
            &inventory,
            Endpoint::Validate,
            &review,
            time::OffsetDateTime::now_utc(),
            None,
        )
        .map_err(|e| e.to_string())?
        .violations;
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
    let docs = files::read_file(path).map_err(|e| e.to_string())?;
    match docs.as_slice() {
        [doc] => review_of(doc).map_err(|e| format!("{}: {e}", path.display())),
        _ => Err(format!(
            "{}: expected exactly one object, found {}",
            path.display(),
            docs.len()
        )),
    }
}

/// An AdmissionReview document becomes its request, read as gator reads one (without `uid` or
/// `kind` where a test leaves them out); anything else is reviewed as a bare object.
pub fn review_of(doc: &Document) -> Result<Review, crate::admission::DecodeError> {
    if doc.kind() == "AdmissionReview" && doc.group() == "admission.k8s.io" {
        if !doc.value["request"].is_object() {
            return Err(crate::admission::DecodeError::NoRequest);
        }
        Review::from_test_request_json(doc.value["request"].clone())
    } else {
        Ok(Review::from_object(doc.value.clone()))
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
