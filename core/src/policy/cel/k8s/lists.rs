//! Kubernetes' lists library (`library/lists.go`): `isSorted()`, `sum()`, `min()`, `max()`,
//! `indexOf(x)` and `lastIndexOf(x)` on lists.
//!
//! cel-rust's strings extension declares `indexOf` and `lastIndexOf` on strings: an overload
//! is picked by the type of its receiver, so those on lists declared here coexist with them.

use super::{elements, take_args};
use cel::common::types::{CelInt, DYN_TYPE, Kind, LIST_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError};
use std::cmp::Ordering;

/// Declares the lists library on `env`.
pub(super) fn extension(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_member_overload("isSorted", "list_is_sorted", LIST_TYPE, vec![], is_sorted)?;
    env.add_member_overload("sum", "list_sum", LIST_TYPE, vec![], sum)?;
    env.add_member_overload("min", "list_min", LIST_TYPE, vec![], min)?;
    env.add_member_overload("max", "list_max", LIST_TYPE, vec![], max)?;
    env.add_member_overload(
        "indexOf",
        "list_index_of",
        LIST_TYPE,
        vec![DYN_TYPE],
        index_of,
    )?;
    env.add_member_overload(
        "lastIndexOf",
        "list_last_index_of",
        LIST_TYPE,
        vec![DYN_TYPE],
        last_index_of,
    )?;
    Ok(())
}

/// How `a` orders against `b`, or an error naming `function` if they don't order.
fn compare(function: &str, a: &dyn Val, b: &dyn Val) -> Result<Ordering, ExecutionError> {
    let not_comparable = || {
        ExecutionError::function_error(
            function,
            format!(
                "cannot compare {} with {}",
                a.get_type().name(),
                b.get_type().name()
            ),
        )
    };
    a.as_comparer()
        .ok_or_else(not_comparable)?
        .compare(b)
        .map_err(|_| not_comparable())
}

/// Whether each element is less than or equal to the next; an empty list is sorted.
fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take_args(args)?;
    let elements = elements("isSorted", list.as_ref())?;
    for pair in elements.windows(2) {
        if compare("isSorted", pair[0], pair[1])? == Ordering::Greater {
            return Ok(CowVal::owned(cel::common::types::CelBool::from(false)));
        }
    }
    Ok(CowVal::owned(cel::common::types::CelBool::from(true)))
}

/// The sum of the elements, which Kubernetes declares for lists of `int`, `uint`, `double`
/// and `duration` only; `0` for an empty list, as Kubernetes returns for an untyped one.
fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take_args(args)?;
    let elements = elements("sum", list.as_ref())?;
    let Some((first, rest)) = elements.split_first() else {
        return Ok(CowVal::owned(CelInt::from(0)));
    };
    let summable = |element: &dyn Val| {
        matches!(
            element.get_type().kind(),
            Kind::Int | Kind::UInt | Kind::Double | Kind::Duration
        )
    };
    let mut total: Box<dyn Val + 'v> = first.clone_as_boxed();
    for element in std::iter::once(first).chain(rest) {
        if !summable(*element) {
            return Err(ExecutionError::function_error(
                "sum",
                format!(
                    "the elements must be int, uint, double or duration, not {}",
                    element.get_type().name()
                ),
            ));
        }
    }
    for element in rest {
        let adder = total
            .as_adder()
            .ok_or_else(|| ExecutionError::function_error("sum", "the elements cannot be added"))?;
        let next = adder.add(*element).map_err(|e| {
            ExecutionError::function_error("sum", format!("cannot add the elements: {e}"))
        })?;
        total = next.into_owned();
    }
    Ok(CowVal::Owned(total))
}

/// The element `keep` prefers over all the others, the first of equal ones; an error on an
/// empty list.
fn extreme<'b, 'v>(
    function: &str,
    list: &CowVal<'b, 'v>,
    replace_when: Ordering,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let elements = elements(function, list.as_ref())?;
    let Some((first, rest)) = elements.split_first() else {
        return Err(ExecutionError::function_error(
            function,
            format!("{function} called on empty list"),
        ));
    };
    let mut best = *first;
    for element in rest {
        if compare(function, best, *element)? == replace_when {
            best = *element;
        }
    }
    Ok(CowVal::Owned(best.clone_as_boxed()))
}

/// The least element.
fn min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take_args(args)?;
    extreme("min", &list, Ordering::Greater)
}

/// The greatest element.
fn max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take_args(args)?;
    extreme("max", &list, Ordering::Less)
}

/// The index of the first element equal to the argument, or -1.
fn index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list, wanted] = take_args(args)?;
    let elements = elements("indexOf", list.as_ref())?;
    let index = elements
        .iter()
        .position(|element| element.equals(wanted.as_ref()));
    Ok(CowVal::owned(CelInt::from(position(index))))
}

/// The index of the last element equal to the argument, or -1.
fn last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list, wanted] = take_args(args)?;
    let elements = elements("lastIndexOf", list.as_ref())?;
    let index = elements
        .iter()
        .rposition(|element| element.equals(wanted.as_ref()));
    Ok(CowVal::owned(CelInt::from(position(index))))
}

/// An index as CEL has it: -1 for none.
fn position(index: Option<usize>) -> i64 {
    index.and_then(|i| i64::try_from(i).ok()).unwrap_or(-1)
}
