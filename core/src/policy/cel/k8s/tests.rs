//! The Kubernetes libraries, run in the environment Palisade builds: cel-rust's standard
//! library and macros, its strings, lists, math and encoders extensions, then these.
//!
//! Each table is transcribed from a reference nobody here wrote, named above it: the
//! examples of https://kubernetes.io/docs/reference/using-api/cel/, or the tests of the
//! kubernetes repository's `staging/src/k8s.io/apiserver/pkg/cel/library`.

use cel::{Context, Env, ExecutionError, Value};
use std::sync::Arc;

/// The environment the CEL engine builds.
fn env() -> Env {
    let mut env = Env::stdlib();
    for ext in [
        cel::extensions::strings,
        cel::extensions::lists,
        cel::extensions::math,
        cel::extensions::encoders,
    ] {
        env.add_extension(ext).expect("cel-rust's extensions");
    }
    env.add_extension(super::extension).expect("the Kubernetes libraries");
    env
}

thread_local! {
    static CONTEXT: Context<'static, 'static> = Context::with_env(Arc::new(env()));
}

/// Evaluates `expr`.
pub(super) fn eval(expr: &str) -> Result<Value, ExecutionError> {
    let program = env().compile(expr).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
    CONTEXT.with(|context| program.execute(context))
}

/// What an expression is expected to do.
pub(super) enum Expect {
    /// Evaluate to this value.
    Is(Value),
    /// Fail with an error whose text holds this.
    Fails(&'static str),
}

pub(super) use Expect::{Fails, Is};

/// `true`, for the tables.
pub(super) const T: Expect = Is(Value::Bool(true));
/// `false`, for the tables.
pub(super) const F: Expect = Is(Value::Bool(false));

/// A string value.
pub(super) fn s(value: &str) -> Expect {
    Is(Value::String(Arc::new(value.to_owned())))
}

/// An int value.
pub(super) fn i(value: i64) -> Expect {
    Is(Value::Int(value))
}

/// A list of strings.
pub(super) fn strings(values: &[&str]) -> Expect {
    Is(Value::List(Arc::new(
        values
            .iter()
            .map(|v| Value::String(Arc::new((*v).to_owned())))
            .collect(),
    )))
}

/// Runs a table, reporting every case that fails rather than the first.
pub(super) fn check(table: Vec<(&str, Expect)>) {
    let mut failures = Vec::new();
    for (expr, expect) in table {
        let got = eval(expr);
        let ok = match (&expect, &got) {
            (Is(want), Ok(got)) => want == got,
            (Fails(want), Err(e)) => e.to_string().contains(want),
            _ => false,
        };
        if !ok {
            let want = match expect {
                Is(v) => format!("{v:?}"),
                Fails(m) => format!("an error with {m:?}"),
            };
            failures.push(format!("{expr}\n    want {want}\n    got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_libraries_declare_nothing_twice() {
    let mut env = env();
    assert!(env.add_extension(super::extension).is_err(), "declaring them again conflicts");
}
