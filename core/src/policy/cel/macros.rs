//! The macros Kubernetes' CEL has and cel-rust lacks: `cel.bind` (cel-go's bindings extension)
//! and the two-variable comprehensions (`all`, `exists`, `existsOne`, `transformList`,
//! `transformMap` and `transformMapEntry` with an index or key and a value; cel-go's
//! `ext.TwoVarComprehensions`, in Kubernetes since 1.33).
//!
//! They expand, as in cel-go, into comprehensions, which [`super::charge`] then meters like
//! any other. cel-rust's interpreter walks one variable per comprehension, so a two-variable
//! one walks `@palisade_pairs(range)`, the `[index or key, value]` pairs of the range, and binds
//! the two names from each pair.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{
    CallExpr, ComprehensionExpr, Expr, IdedExpr, ListExpr, LiteralValue, MapExpr, operators,
};
use cel::common::types::{DYN_TYPE, MAP_TYPE};
use cel::common::value::{CowVal, Val};
use cel::objects::{Key, Map};
use cel::parser::{Macro, MacroExprHelper, ParseError};
use cel::{DeclarationError, Env, ExecutionError, Value};

/// The `[index or key, value]` pairs of a list or map.
const PAIRS: &str = "@palisade_pairs";
/// A map with one more entry; an error when the key is already there.
const MAP_INSERT: &str = "@palisade_map_insert";
/// A map with the entries of a second map; an error when one of its keys is already there.
const MAP_MERGE: &str = "@palisade_map_merge";
const RESULT: &str = "@result";
const PAIR: &str = "@pair";

/// Adds the macros and the functions they expand to.
pub(crate) fn extension(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_macro(Macro::receiver("bind", 3, bind))?;
    for (name, shape) in [
        ("all", Shape::All),
        ("exists", Shape::Exists),
        ("existsOne", Shape::ExistsOne),
        ("exists_one", Shape::ExistsOne),
        ("transformList", Shape::List),
        ("transformMap", Shape::Map),
        ("transformMapEntry", Shape::MapEntry),
    ] {
        env.add_macro(Macro::receiver(name, 3, move |h, t, a| two(h, t, a, shape)))?;
        if matches!(shape, Shape::List | Shape::Map | Shape::MapEntry) {
            env.add_macro(Macro::receiver(name, 4, move |h, t, a| two(h, t, a, shape)))?;
        }
    }
    env.add_overload(PAIRS, "palisade_pairs_dyn", vec![DYN_TYPE], pairs)?;
    env.add_overload(
        MAP_INSERT,
        "palisade_map_insert",
        vec![MAP_TYPE, DYN_TYPE, DYN_TYPE],
        map_insert,
    )?;
    env.add_overload(
        MAP_MERGE,
        "palisade_map_merge",
        vec![MAP_TYPE, MAP_TYPE],
        map_merge,
    )?;
    Ok(())
}

fn ident(h: &mut MacroExprHelper<'_>, name: &str) -> IdedExpr {
    h.next_expr(Expr::Ident(name.to_owned()))
}

fn call(h: &mut MacroExprHelper<'_>, name: &str, args: Vec<IdedExpr>) -> IdedExpr {
    h.next_expr(Expr::Call(CallExpr {
        func_name: name.to_owned(),
        target: None,
        args,
    }))
}

fn literal(h: &mut MacroExprHelper<'_>, value: LiteralValue) -> IdedExpr {
    h.next_expr(Expr::Literal(value))
}

fn name_of(h: &MacroExprHelper<'_>, e: &IdedExpr, what: &str) -> Result<String, ParseError> {
    match &e.expr {
        Expr::Ident(name) => Ok(name.clone()),
        _ => Err(h.new_error(e.id, format!("{what} must be a simple name"))),
    }
}

/// `x` bound to `init` in `result`: a comprehension over no element, as cel-go expands it.
fn bound(h: &mut MacroExprHelper<'_>, x: String, init: IdedExpr, result: IdedExpr) -> IdedExpr {
    let range = h.next_expr(Expr::List(ListExpr::new(Vec::new())));
    let cond = literal(h, LiteralValue::Boolean(false.into()));
    let step = ident(h, &x);
    h.next_expr(Expr::Comprehension(Box::new(ComprehensionExpr {
        iter_range: range,
        iter_var: "#unused".to_owned(),
        iter_var2: None,
        accu_var: x,
        accu_init: init,
        loop_cond: cond,
        loop_step: step,
        result,
    })))
}

/// `cel.bind(x, init, expr)`; any other `bind` is left as the call it is.
fn bind(
    h: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Result<Option<IdedExpr>, ParseError> {
    if !matches!(target.as_ref().map(|t| &t.expr), Some(Expr::Ident(n)) if n == "cel") {
        return Ok(None);
    }
    let (Some(result), Some(init), Some(x)) = (args.pop(), args.pop(), args.pop()) else {
        return Ok(None);
    };
    let x = name_of(h, &x, "cel.bind's variable")?;
    Ok(Some(bound(h, x, init, result)))
}

#[derive(Clone, Copy)]
enum Shape {
    All,
    Exists,
    ExistsOne,
    List,
    Map,
    MapEntry,
}

/// A two-variable comprehension over `target`'s pairs.
fn two(
    h: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
    shape: Shape,
) -> Result<Option<IdedExpr>, ParseError> {
    let Some(range) = target.take() else {
        return Ok(None);
    };
    let mut args = std::mem::take(args).into_iter();
    let (Some(first), Some(second)) = (args.next(), args.next()) else {
        return Err(h.new_error(range.id, "a two-variable comprehension needs two names"));
    };
    let first = name_of(h, &first, "a comprehension's first variable")?;
    let second = name_of(h, &second, "a comprehension's second variable")?;
    if first == second {
        return Err(h.new_error(
            range.id,
            format!("a comprehension's two variables are both named {first:?}"),
        ));
    }
    let rest: Vec<IdedExpr> = args.collect();
    // Each body sees the pair's two parts under the names the author gave.
    let bind_pair = |h: &mut MacroExprHelper<'_>, body: IdedExpr| {
        let at = |h: &mut MacroExprHelper<'_>, i: i64| {
            let pair = ident(h, PAIR);
            let index = literal(h, LiteralValue::Int(i.into()));
            call(h, operators::INDEX, vec![pair, index])
        };
        let value = at(h, 1);
        let inner = bound(h, second.clone(), value, body);
        let key = at(h, 0);
        bound(h, first.clone(), key, inner)
    };
    let (filter, body) = match rest.len() {
        1 => (None, rest.into_iter().next()),
        2 => {
            let mut rest = rest.into_iter();
            (rest.next(), rest.next())
        }
        _ => (None, None),
    };
    let Some(body) = body else {
        return Ok(None);
    };
    let body = bind_pair(h, body);
    let filter = filter.map(|f| bind_pair(h, f));
    let result_ident = |h: &mut MacroExprHelper<'_>| ident(h, RESULT);
    let (init, cond, step, result) = match shape {
        Shape::All | Shape::Exists => {
            let all = matches!(shape, Shape::All);
            let init = literal(h, LiteralValue::Boolean(all.into()));
            let accu = result_ident(h);
            let accu = if all {
                accu
            } else {
                call(h, operators::LOGICAL_NOT, vec![accu])
            };
            let cond = call(h, operators::NOT_STRICTLY_FALSE, vec![accu]);
            let accu = result_ident(h);
            let op = if all {
                operators::LOGICAL_AND
            } else {
                operators::LOGICAL_OR
            };
            let step = call(h, op, vec![accu, body]);
            (init, cond, step, result_ident(h))
        }
        Shape::ExistsOne => {
            let init = literal(h, LiteralValue::Int(0.into()));
            let cond = literal(h, LiteralValue::Boolean(true.into()));
            let accu = result_ident(h);
            let one = literal(h, LiteralValue::Int(1.into()));
            let plus = call(h, operators::ADD, vec![accu, one]);
            let accu = result_ident(h);
            let step = call(h, operators::CONDITIONAL, vec![body, plus, accu]);
            let accu = result_ident(h);
            let one = literal(h, LiteralValue::Int(1.into()));
            let result = call(h, operators::EQUALS, vec![accu, one]);
            (init, cond, step, result)
        }
        Shape::List => {
            let init = h.next_expr(Expr::List(ListExpr::new(Vec::new())));
            let cond = literal(h, LiteralValue::Boolean(true.into()));
            let item = h.next_expr(Expr::List(ListExpr::new(vec![body])));
            let accu = result_ident(h);
            let step = call(h, operators::ADD, vec![accu, item]);
            (init, cond, step, result_ident(h))
        }
        Shape::Map | Shape::MapEntry => {
            let init = h.next_expr(Expr::Map(MapExpr {
                entries: Vec::new(),
            }));
            let cond = literal(h, LiteralValue::Boolean(true.into()));
            let accu = result_ident(h);
            let step = if matches!(shape, Shape::Map) {
                let pair = ident(h, PAIR);
                let zero = literal(h, LiteralValue::Int(0.into()));
                let key = call(h, operators::INDEX, vec![pair, zero]);
                call(h, MAP_INSERT, vec![accu, key, body])
            } else {
                call(h, MAP_MERGE, vec![accu, body])
            };
            (init, cond, step, result_ident(h))
        }
    };
    let step = match filter {
        Some(filter) => {
            let accu = result_ident(h);
            call(h, operators::CONDITIONAL, vec![filter, step, accu])
        }
        None => step,
    };
    let range = call(h, PAIRS, vec![range]);
    Ok(Some(h.next_expr(Expr::Comprehension(Box::new(
        ComprehensionExpr {
            iter_range: range,
            iter_var: PAIR.to_owned(),
            iter_var2: None,
            accu_var: RESULT.to_owned(),
            accu_init: init,
            loop_cond: cond,
            loop_step: step,
            result,
        },
    )))))
}

fn value_of(v: &CowVal<'_, '_>) -> Result<Value, ExecutionError> {
    Value::try_from(v.as_ref())
}

fn owned<'b, 'v>(value: Value) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let boxed: Box<dyn Val> = value
        .try_into()
        .map_err(|_| ExecutionError::function_error(PAIRS, "cannot hold the value"))?;
    Ok(CowVal::Owned(boxed))
}

/// `[[0, a], [1, b]]` for `[a, b]`; `[[k, v], …]` for a map.
fn pairs<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let Some(range) = args.pop() else {
        return Err(ExecutionError::function_error(PAIRS, "no range"));
    };
    let pairs: Vec<Value> = match value_of(&range)? {
        Value::List(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| Value::List(Arc::new(vec![Value::Int(i as i64), v.clone()])))
            .collect(),
        Value::Map(map) => map
            .map
            .iter()
            .map(|(k, v)| Value::List(Arc::new(vec![Value::from(k), v.clone()])))
            .collect(),
        other => {
            return Err(ExecutionError::function_error(
                "comprehension",
                format!(
                    "a two-variable comprehension ranges over a list or a map, not {}",
                    other.type_of()
                ),
            ));
        }
    };
    owned(Value::List(Arc::new(pairs)))
}

fn key(value: Value) -> Result<Key, ExecutionError> {
    match value {
        Value::Int(i) => Ok(Key::Int(i)),
        Value::UInt(u) => Ok(Key::Uint(u)),
        Value::Bool(b) => Ok(Key::Bool(b)),
        Value::String(s) => Ok(Key::String(s)),
        other => Err(ExecutionError::function_error(
            "transformMap",
            format!(
                "a map key is an int, uint, bool or string, not {}",
                other.type_of()
            ),
        )),
    }
}

fn map_of(v: Value) -> Result<HashMap<Key, Value>, ExecutionError> {
    match v {
        Value::Map(m) => Ok(Arc::unwrap_or_clone(m.map)),
        other => Err(ExecutionError::function_error(
            "transformMapEntry",
            format!("the entry must be a map, not {}", other.type_of()),
        )),
    }
}

fn map_insert<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [map, k, v]: [CowVal<'b, 'v>; 3] = args
        .try_into()
        .map_err(|_| ExecutionError::function_error(MAP_INSERT, "three arguments"))?;
    let mut map = map_of(value_of(&map)?)?;
    let k = key(value_of(&k)?)?;
    if map.contains_key(&k) {
        return Err(ExecutionError::function_error(
            "transformMap",
            format!("insert failed: key {k:?} already exists"),
        ));
    }
    map.insert(k, value_of(&v)?);
    owned(Value::Map(Map { map: Arc::new(map) }))
}

fn map_merge<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [map, entry]: [CowVal<'b, 'v>; 2] = args
        .try_into()
        .map_err(|_| ExecutionError::function_error(MAP_MERGE, "two arguments"))?;
    let mut map = map_of(value_of(&map)?)?;
    for (k, v) in map_of(value_of(&entry)?)? {
        if map.contains_key(&k) {
            return Err(ExecutionError::function_error(
                "transformMapEntry",
                format!("insert failed: key {k:?} already exists"),
            ));
        }
        map.insert(k, v);
    }
    owned(Value::Map(Map { map: Arc::new(map) }))
}
