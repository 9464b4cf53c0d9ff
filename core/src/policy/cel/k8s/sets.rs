//! cel-go's sets extension (`ext.Sets()`), which Kubernetes enables: `sets.contains`,
//! `sets.equivalent` and `sets.intersects` over lists, with CEL's equality, so that
//! `sets.contains([1], [1.0])` holds.

use super::{elements, take_args};
use cel::common::types::{CelBool, LIST_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

/// Declares the sets extension on `env`.
pub(super) fn extension(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload(
        "sets.contains",
        "list_sets_contains_list",
        vec![LIST_TYPE, LIST_TYPE],
        contains,
    )?;
    env.add_overload(
        "sets.equivalent",
        "list_sets_equivalent_list",
        vec![LIST_TYPE, LIST_TYPE],
        equivalent,
    )?;
    env.add_overload(
        "sets.intersects",
        "list_sets_intersects_list",
        vec![LIST_TYPE, LIST_TYPE],
        intersects,
    )?;
    Ok(())
}

/// Whether every element of `subset` equals some element of `set`.
fn includes(set: &[&dyn Val], subset: &[&dyn Val]) -> bool {
    subset
        .iter()
        .all(|wanted| set.iter().any(|element| element.equals(*wanted)))
}

/// The two lists of a call, borrowed.
fn both<'a>(
    function: &str,
    first: &'a CowVal<'_, '_>,
    second: &'a CowVal<'_, '_>,
) -> Result<(Vec<&'a dyn Val>, Vec<&'a dyn Val>), ExecutionError> {
    let first = elements(function, first.as_ref())?;
    let second = elements(function, second.as_ref())?;
    Ok((
        first.into_iter().map(|v| v as &dyn Val).collect(),
        second.into_iter().map(|v| v as &dyn Val).collect(),
    ))
}

/// `sets.contains(list, sublist)`: whether `list` holds every element of `sublist`; an
/// empty `sublist` is contained in any list.
fn contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list, sublist] = take_args(args)?;
    let (list, sublist) = both("sets.contains", &list, &sublist)?;
    Ok(CowVal::owned(CelBool::from(includes(&list, &sublist))))
}

/// `sets.equivalent(a, b)`: whether each list holds every element of the other, whatever
/// their order and duplicates.
fn equivalent<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = take_args(args)?;
    let (a, b) = both("sets.equivalent", &a, &b)?;
    Ok(CowVal::owned(CelBool::from(includes(&a, &b) && includes(&b, &a))))
}

/// `sets.intersects(a, b)`: whether the lists share an element.
fn intersects<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = take_args(args)?;
    let (a, b) = both("sets.intersects", &a, &b)?;
    let shared = a.iter().any(|x| b.iter().any(|y| x.equals(*y)));
    Ok(CowVal::owned(CelBool::from(shared)))
}
