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
fn includes(set: &[&(dyn Val + '_)], subset: &[&(dyn Val + '_)]) -> bool {
    subset
        .iter()
        .all(|wanted| set.iter().any(|element| element.equals(*wanted)))
}

/// `sets.contains(list, sublist)`: whether `list` holds every element of `sublist`; an
/// empty `sublist` is contained in any list.
fn contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list, sublist] = take_args(args)?;
    let list = elements("sets.contains", list.as_ref())?;
    let sublist = elements("sets.contains", sublist.as_ref())?;
    Ok(CowVal::owned(CelBool::from(includes(&list, &sublist))))
}

/// `sets.equivalent(a, b)`: whether each list holds every element of the other, whatever
/// their order and duplicates.
fn equivalent<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = take_args(args)?;
    let a = elements("sets.equivalent", a.as_ref())?;
    let b = elements("sets.equivalent", b.as_ref())?;
    Ok(CowVal::owned(CelBool::from(
        includes(&a, &b) && includes(&b, &a),
    )))
}

/// `sets.intersects(a, b)`: whether the lists share an element.
fn intersects<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = take_args(args)?;
    let a = elements("sets.intersects", a.as_ref())?;
    let b = elements("sets.intersects", b.as_ref())?;
    let shared = a.iter().any(|x| b.iter().any(|y| x.equals(*y)));
    Ok(CowVal::owned(CelBool::from(shared)))
}
