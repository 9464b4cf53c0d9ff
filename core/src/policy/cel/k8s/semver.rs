//! Kubernetes' semver library (`library/semverlib.go`, Kubernetes 1.33): the
//! `kubernetes.Semver` type, `semver(s)`, `semver(s, normalize)`, `isSemver(s)`,
//! `isSemver(s, normalize)` and its methods.
//!
//! Kubernetes parses with blang/semver's strict `Parse`, which takes SemVer 2.0 as the
//! `semver` crate does: three numbers without leading zeros, then optional pre-release and
//! build identifiers. Versions compare by SemVer precedence, build metadata ignored, and are
//! equal when neither precedes the other.

use super::opaque_val;
use cel::common::types::{CelBool, CelInt, CelString, Kind, Type};
use cel::{DeclarationError, Env, ExecutionError};
use std::cmp::Ordering;

/// The type of semantic versions, as Kubernetes names it.
pub(super) static SEMVER_TYPE: Type = Type::simple_type(Kind::Opaque, "kubernetes.Semver");

/// A semantic version.
#[derive(Clone, Debug)]
pub(super) struct Semver(semver::Version);
opaque_val!(Semver, SEMVER_TYPE);

/// Versions are equal by precedence: `1.0.0+a` equals `1.0.0+b`.
impl PartialEq for Semver {
    fn eq(&self, other: &Self) -> bool {
        self.0.cmp_precedence(&other.0) == Ordering::Equal
    }
}

/// Declares the semver library on `env`.
pub(super) fn extension(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_type(SEMVER_TYPE.to_owned())?;
    cel::add_overload!(env, fn semver: (CelString) -> Result<Semver>, id = "string_to_semver")?;
    cel::add_overload!(env, fn semver_normalize: (CelString, CelBool) -> Result<Semver>,
        name = "semver", id = "string_bool_to_semver")?;
    cel::add_overload!(env, fn is_semver: (CelString) -> CelBool, id = "is_semver_string")?;
    cel::add_overload!(env, fn is_semver_normalize: (CelString, CelBool) -> CelBool,
        name = "isSemver", id = "is_semver_string_bool")?;
    cel::add_member_overload!(env, fn major: (Semver) -> CelInt, id = "semver_major")?;
    cel::add_member_overload!(env, fn minor: (Semver) -> CelInt, id = "semver_minor")?;
    cel::add_member_overload!(env, fn patch: (Semver) -> CelInt, id = "semver_patch")?;
    cel::add_member_overload!(env, fn is_greater_than: (Semver, Semver) -> CelBool,
        name = "isGreaterThan", id = "semver_is_greater_than")?;
    cel::add_member_overload!(env, fn is_less_than: (Semver, Semver) -> CelBool,
        name = "isLessThan", id = "semver_is_less_than")?;
    cel::add_member_overload!(env, fn compare_to: (Semver, Semver) -> CelInt,
        name = "compareTo", id = "semver_compare_to")?;
    Ok(())
}

/// Parses a version, strictly or after Kubernetes' normalization.
fn parse(s: &str, normalize: bool) -> Result<semver::Version, String> {
    let text = if normalize {
        normalized(s)?
    } else {
        s.to_owned()
    };
    semver::Version::parse(&text).map_err(|e| format!("{s:?} is not a semantic version: {e}"))
}

/// Kubernetes' `normalizeAndParse`, less the parse: no `v` prefix, leading zeros removed
/// from each of the (at most) three dot-separated parts, and missing minor and patch
/// numbers added as zeros.
fn normalized(s: &str) -> Result<String, String> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let mut parts: Vec<String> = s
        .splitn(3, '.')
        .map(|part| {
            if part.len() <= 1 {
                return part.to_owned();
            }
            let trimmed = part.trim_start_matches('0');
            if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
                trimmed.to_owned()
            } else {
                format!("0{trimmed}")
            }
        })
        .collect();
    if parts.len() < 3 {
        if parts.last().is_some_and(|last| last.contains(['+', '-'])) {
            return Err("short version cannot contain PreRelease/Build meta data".to_owned());
        }
        parts.resize(3, "0".to_owned());
    }
    Ok(parts.join("."))
}

fn semver(s: &CelString<'_>) -> Result<Semver, ExecutionError> {
    semver_normalize(s, &CelBool::from(false))
}

fn semver_normalize(s: &CelString<'_>, normalize: &CelBool) -> Result<Semver, ExecutionError> {
    parse(s.inner(), *normalize.inner())
        .map(Semver)
        .map_err(|e| ExecutionError::function_error("semver", e))
}

fn is_semver(s: &CelString<'_>) -> CelBool {
    is_semver_normalize(s, &CelBool::from(false))
}

fn is_semver_normalize(s: &CelString<'_>, normalize: &CelBool) -> CelBool {
    parse(s.inner(), *normalize.inner()).is_ok().into()
}

/// A version number as a CEL int; Go converts a `uint64` past the largest `int64` with
/// wrapping, as here.
fn number(n: u64) -> CelInt {
    (n as i64).into()
}

fn major(v: &Semver) -> CelInt {
    number(v.0.major)
}

fn minor(v: &Semver) -> CelInt {
    number(v.0.minor)
}

fn patch(v: &Semver) -> CelInt {
    number(v.0.patch)
}

fn is_greater_than(v: &Semver, other: &Semver) -> CelBool {
    (v.0.cmp_precedence(&other.0) == Ordering::Greater).into()
}

fn is_less_than(v: &Semver, other: &Semver) -> CelBool {
    (v.0.cmp_precedence(&other.0) == Ordering::Less).into()
}

fn compare_to(v: &Semver, other: &Semver) -> CelInt {
    match v.0.cmp_precedence(&other.0) {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
    .into()
}
