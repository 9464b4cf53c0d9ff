//! Kubernetes' regex library (`library/regex.go`): `find(re)`, `findAll(re)` and
//! `findAll(re, n)` on strings, with RE2 syntax, which the `regex` crate shares.

use super::string_list;
use cel::common::types::{CelInt, CelList, CelString};
use cel::{DeclarationError, Env, ExecutionError};

/// Declares the regex library on `env`.
pub(super) fn extension(env: &mut Env) -> Result<(), DeclarationError> {
    cel::add_member_overload!(env, fn find: (CelString, CelString) -> Result<CelString>,
        id = "string_find_string")?;
    cel::add_member_overload!(env, fn find_all: (CelString, CelString) -> Result<CelList>,
        id = "string_find_all_string")?;
    cel::add_member_overload!(env, fn find_all_n: (CelString, CelString, CelInt) -> Result<CelList>,
        name = "findAll", id = "string_find_all_string_int")?;
    Ok(())
}

/// `pattern` compiled, or an error naming `function` and what is wrong with it.
fn compile(function: &str, pattern: &str) -> Result<regex::Regex, ExecutionError> {
    cached(pattern).map_err(|e| {
        ExecutionError::function_error(
            function,
            format!("invalid regular expression {pattern:?}: {e}"),
        )
    })
}

/// Most patterns one thread keeps compiled; past it the cache starts again.
pub(crate) const CACHED_PATTERNS: usize = 256;

thread_local! {
    static PATTERNS: std::cell::RefCell<std::collections::HashMap<String, regex::Regex>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// `pattern` compiled, once per thread: a template's patterns come from its code and its
/// constraints' parameters, the same at every review, and compiling one costs far more than
/// matching it. (A `Regex` is shared by its clones.) An invalid pattern is not kept.
pub(crate) fn cached(pattern: &str) -> Result<regex::Regex, regex::Error> {
    if let Some(re) = PATTERNS.with(|p| p.borrow().get(pattern).cloned()) {
        return Ok(re);
    }
    let re = regex::Regex::new(pattern)?;
    PATTERNS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= CACHED_PATTERNS {
            p.clear();
        }
        p.insert(pattern.to_owned(), re.clone());
    });
    Ok(re)
}

/// The first match of `pattern` in `this`, or the empty string if there is none.
fn find(
    this: &CelString<'_>,
    pattern: &CelString<'_>,
) -> Result<CelString<'static>, ExecutionError> {
    let re = compile("find", pattern.inner())?;
    Ok(re
        .find(this.inner())
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default()
        .into())
}

/// Every match of `pattern` in `this`, in order.
fn find_all(
    this: &CelString<'_>,
    pattern: &CelString<'_>,
) -> Result<CelList<'static>, ExecutionError> {
    find_all_n(this, pattern, &CelInt::from(-1))
}

/// The first `limit` matches of `pattern` in `this`: all of them when `limit` is negative,
/// none when it is zero, as Go's `FindAllString`.
fn find_all_n(
    this: &CelString<'_>,
    pattern: &CelString<'_>,
    limit: &CelInt,
) -> Result<CelList<'static>, ExecutionError> {
    let re = compile("findAll", pattern.inner())?;
    let matches = re.find_iter(this.inner()).map(|m| m.as_str().to_owned());
    Ok(match usize::try_from(*limit.inner()) {
        Ok(limit) => string_list(matches.take(limit)),
        Err(_) => string_list(matches),
    })
}
