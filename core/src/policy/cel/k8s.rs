//! The Kubernetes CEL libraries that admission policies use, beside cel-rust's standard
//! library and its strings, lists, math and encoders extensions.
//!
//! Each submodule is one of the libraries of the Kubernetes API server
//! (`k8s.io/apiserver/pkg/cel/library`), or of cel-go's extensions that Kubernetes enables and
//! cel-rust lacks, declared with the names, receivers and results Kubernetes gives them:
//!
//! - [`lists`]: `isSorted`, `sum`, `min`, `max`, `indexOf` and `lastIndexOf` on lists;
//! - [`regex`]: `find` and `findAll` on strings;
//! - [`urls`]: `url`, `isURL` and the accessors of a `kubernetes.URL`, parsed as Go's
//!   `url.ParseRequestURI` does;
//! - [`quantity`]: `quantity`, `isQuantity` and the arithmetic of a `kubernetes.Quantity`,
//!   parsed as apimachinery's `resource.ParseQuantity` does;
//! - [`net`]: `ip`, `isIP`, `ip.isCanonical`, `cidr`, `isCIDR` and the methods of a `net.IP` and
//!   a `net.CIDR`, parsed as Go's `netip` does, less IPv4-mapped IPv6 addresses and zones;
//! - [`format`](mod@format): the `format.*` named formats and their `validate`, with apimachinery's
//!   messages;
//! - [`sets`]: cel-go's `sets.contains`, `sets.equivalent` and `sets.intersects`;
//! - [`semver`]: `semver`, `isSemver` and the methods of a `kubernetes.Semver`.
//!
//! Kubernetes' strings extension (cel-go's `ext.Strings`, version 2) has nothing cel-rust's
//! lacks, so nothing is added for it; cel-rust's answers differ at the edges (cel-go's as
//! of the versions Kubernetes vendors, which changed them over time):
//!
//! - `indexOf(s, offset)` and `lastIndexOf(s, offset)` with an empty `s` return `offset` in
//!   cel-go, even past the end or negative; cel-rust caps it at the length, and fails on a
//!   negative one;
//! - `''.indexOf('a')` and `''.lastIndexOf('a')` fail with "index out of range" in cel-go (up
//!   to the versions that return -1 for an offset past the end); cel-rust returns -1;
//! - `reverse()` on strings is cel-go's version 3: Kubernetes doesn't declare it, cel-rust
//!   does;
//! - `format` follows cel-go's newer formatting (`formatting_v2.go`) rather than the one
//!   version 2 has.
//!
//! Every function fails with an error, never a panic, whatever its input.

mod format;
mod lists;
mod net;
mod quantity;
pub(crate) mod regex;
mod semver;
mod sets;
mod urls;

#[cfg(test)]
mod tests;

use cel::ExecutionError;
use cel::common::traits::Iterable;
use cel::common::value::Val;

/// Adds the Kubernetes libraries to `env`.
///
/// `env` is expected to hold cel-rust's standard library and its strings, lists, math and
/// encoders extensions already: nothing here redeclares what they declare.
pub(crate) fn extension(env: &mut cel::Env) -> Result<(), cel::DeclarationError> {
    lists::extension(env)?;
    regex::extension(env)?;
    urls::extension(env)?;
    quantity::extension(env)?;
    net::extension(env)?;
    format::extension(env)?;
    sets::extension(env)?;
    semver::extension(env)?;
    Ok(())
}

/// Implements [`Val`] for a `'static` Rust type that stands for an opaque CEL type: its type
/// is `$cel_type`, it equals the values of the same Rust type that are `==` to it, and it
/// can be downcast to, so that overloads can take it.
macro_rules! opaque_val {
    ($rust_type:ty, $cel_type:expr) => {
        impl cel::common::value::Val for $rust_type {
            fn get_type(&self) -> &cel::common::types::Type {
                &$cel_type
            }

            fn cel_type() -> &'static cel::common::types::Type {
                &$cel_type
            }

            fn equals(&self, other: &dyn cel::common::value::Val) -> bool {
                other
                    .downcast_ref::<$rust_type>()
                    .is_some_and(|other| self == other)
            }

            fn clone_as_boxed<'v>(&self) -> Box<dyn cel::common::value::Val + 'v>
            where
                Self: 'v,
            {
                Box::new(self.clone())
            }

            fn as_any(&self) -> Option<&dyn std::any::Any> {
                Some(self)
            }
        }

        impl cel::common::value::StaticVal for $rust_type {}
    };
}
pub(crate) use opaque_val;

/// `list` as something to iterate, or an error naming the function that wanted a list.
fn iterable<'b, 'v>(
    function: &str,
    list: &'b (dyn Val + 'v),
) -> Result<&'b (dyn Iterable + 'v), ExecutionError> {
    list.as_iterable().ok_or_else(|| {
        ExecutionError::function_error(
            function,
            format!("expected a list, got {}", list.get_type().name()),
        )
    })
}

/// The elements of `list`, borrowed.
fn elements<'b, 'v>(
    function: &str,
    list: &'b (dyn Val + 'v),
) -> Result<Vec<&'b (dyn Val + 'v)>, ExecutionError> {
    let mut items = iterable(function, list)?.iter();
    let mut elements = Vec::new();
    while let Some(item) = items.next() {
        elements.push(item);
    }
    Ok(elements)
}

/// The `N` arguments of a hand-registered overload, or an error if the call has another
/// number of them (which the overload's declaration rules out).
fn take_args<'b, 'v, const N: usize>(
    args: Vec<cel::common::value::CowVal<'b, 'v>>,
) -> Result<[cel::common::value::CowVal<'b, 'v>; N], ExecutionError> {
    args.try_into()
        .map_err(|args: Vec<_>| ExecutionError::invalid_argument_count(N, args.len()))
}

/// `val` as the Rust type `T` its overload was declared with.
fn arg<'b, 'v, T: cel::common::value::FromVal<'b, 'v> + Val>(
    function: &str,
    val: &'b (dyn Val + 'v),
) -> Result<&'b T, ExecutionError> {
    val.downcast_ref::<T>().ok_or_else(|| {
        ExecutionError::function_error(
            function,
            format!(
                "expected {}, got {}",
                T::cel_type().name(),
                val.get_type().name()
            ),
        )
    })
}

/// A list of strings, as CEL values.
fn string_list(strings: impl IntoIterator<Item = String>) -> cel::common::types::CelList<'static> {
    strings
        .into_iter()
        .map(|s| Box::new(cel::common::types::CelString::from(s)) as Box<dyn Val>)
        .collect::<Vec<_>>()
        .into()
}
