//! What a template reads of `data.inventory`, found in the modules regorus parsed: the places it
//! looks into and the values it uses whole ([`crate::inventory::keep`] keeps those fields).
//!
//! The analysis follows values, not spellings. It starts from `data` (and imports of `data.…`),
//! follows references (`.f`, `["f"]`, `[0]`; any other index is "any key"), and variables bound
//! to such a place (`x := …`, `x = …`, `some x in …`, `every x in …`, a user function's
//! parameter). Variables are tracked by name across a module, whatever rule they are in: a name
//! bound to the inventory anywhere is the inventory everywhere, which only ever keeps more.
//! Every other use of such a value (a comparison, a builtin's argument, a rule's value or key,
//! a composite literal, `walk`, `json.marshal`…) reads it whole. A reference to `data` whose
//! first key is not written (`data[x]`), or `data` itself used as a value, reads everything.
//! `object.get(x, "k", d)` with a literal key reads `x.k`.

use std::collections::{BTreeSet, HashMap};

use regorus::unstable::{
    AssignOp, Expr, Literal, Module, Query, Ref, Rule, RuleHead, WithModifier,
};

use crate::inventory::keep::{Reads, Step};

/// Rounds of propagation before giving up (and reading everything).
const MAX_ROUNDS: usize = 32;
/// Longest place followed; deeper ones read everything.
const MAX_DEPTH: usize = 48;
/// Most places one variable may stand for.
const MAX_PLACES: usize = 512;

/// A place in `data`, as keys from `data`.
type Place = Vec<Step>;

/// One definition of a user function: its module and its parameters.
type Definition<'m> = (usize, &'m [Ref<Expr>]);

/// What `modules` (one template's, after Palisade's rewrites) read of `data.inventory`.
pub(crate) fn inventory_reads(modules: &[Ref<Module>]) -> Reads {
    let mut analysis = Analysis::new(modules);
    for _ in 0..MAX_ROUNDS {
        analysis.changed = false;
        for (m, module) in modules.iter().enumerate() {
            for rule in &module.policy {
                analysis.rule(m, rule);
            }
        }
        if analysis.gave_up {
            return Reads::everything();
        }
        if !analysis.changed {
            return analysis.reads;
        }
    }
    Reads::everything()
}

struct Analysis<'m> {
    /// Each module's package, without `data`.
    packages: Vec<Vec<String>>,
    /// Each module's imports of `data.…`, by the name they bind.
    imports: Vec<HashMap<String, Place>>,
    /// User functions by path (without `data`): their module and parameters.
    functions: HashMap<Vec<String>, Vec<Definition<'m>>>,
    /// The places a variable of a module may stand for.
    bound: HashMap<(usize, String), BTreeSet<Place>>,
    reads: Reads,
    changed: bool,
    gave_up: bool,
}

fn name_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Var { value, .. } => value.as_string().ok().map(|s| s.to_string()),
        _ => None,
    }
}

/// `a.b.c` as `["a", "b", "c"]`; `None` when not written out.
fn dotted(e: &Expr) -> Option<Vec<String>> {
    match e {
        Expr::Var { .. } => name_of(e).map(|n| vec![n]),
        Expr::RefDot { refr, field, .. } => {
            let mut path = dotted(refr)?;
            path.push(field.1.as_string().ok()?.to_string());
            Some(path)
        }
        Expr::RefBrack { refr, index, .. } => {
            let mut path = dotted(refr)?;
            match index.as_ref() {
                Expr::String { value, .. } | Expr::RawString { value, .. } => {
                    path.push(value.as_string().ok()?.to_string());
                    Some(path)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The step an index expression takes: a literal key or index, else any key.
fn step(index: &Expr) -> Step {
    match index {
        Expr::String { value, .. } | Expr::RawString { value, .. } => value
            .as_string()
            .map(|s| Step::Key(s.to_string()))
            .unwrap_or(Step::Any),
        Expr::Number { value, .. } => value
            .as_number()
            .ok()
            .and_then(|n| n.as_u64())
            .map(Step::Index)
            .unwrap_or(Step::Any),
        _ => Step::Any,
    }
}

impl<'m> Analysis<'m> {
    fn new(modules: &'m [Ref<Module>]) -> Self {
        let mut analysis = Self {
            packages: Vec::new(),
            imports: Vec::new(),
            functions: HashMap::new(),
            bound: HashMap::new(),
            reads: Reads::default(),
            changed: false,
            gave_up: false,
        };
        for (m, module) in modules.iter().enumerate() {
            let package = dotted(&module.package.refr).unwrap_or_default();
            let package: Vec<String> = match package.first().map(String::as_str) {
                Some("data") => package[1..].to_vec(),
                _ => package,
            };
            // A template in package inventory would define data.inventory's own rules.
            if package.first().map(String::as_str) == Some("inventory") {
                analysis.gave_up = true;
            }
            let mut imports = HashMap::new();
            for import in &module.imports {
                let Some(path) = dotted(&import.refr) else {
                    continue;
                };
                if path.first().map(String::as_str) != Some("data") {
                    continue;
                }
                let alias = match &import.r#as {
                    Some(span) => span.text().to_owned(),
                    None => path.last().cloned().unwrap_or_default(),
                };
                imports.insert(alias, path[1..].iter().cloned().map(Step::Key).collect());
            }
            for rule in &module.policy {
                if let Rule::Spec {
                    head: RuleHead::Func { refr, args, .. },
                    ..
                } = rule.as_ref()
                    && let Some(name) = dotted(refr)
                {
                    let path = [package.clone(), name].concat();
                    analysis
                        .functions
                        .entry(path)
                        .or_default()
                        .push((m, args.as_slice()));
                }
            }
            analysis.packages.push(package);
            analysis.imports.push(imports);
        }
        analysis
    }

    /// Records a read of `place`.
    fn read(&mut self, place: &[Step], whole: bool) {
        match place {
            [] => self.gave_up |= whole,
            // `data[x]`, `data.inventory[x]`: cluster-scoped and namespaced objects at once.
            [Step::Any, ..] => self.gave_up = true,
            [Step::Key(k), rest @ ..] if k == "inventory" => match rest {
                [] if whole => self.gave_up = true,
                [Step::Any, ..] => self.gave_up = true,
                _ => self.reads.add(rest.to_vec(), whole),
            },
            _ => {}
        }
    }

    /// Whether a place may be in the inventory (so worth following).
    fn followed(place: &[Step]) -> bool {
        match place.first() {
            None | Some(Step::Any) => true,
            Some(Step::Key(k)) => k == "inventory",
            Some(Step::Index(_)) => false,
        }
    }

    /// Binds variable `name` of module `m` to `places`.
    fn bind(&mut self, m: usize, name: &str, places: Vec<Place>) {
        if name == "_" {
            return;
        }
        for place in places {
            if !Self::followed(&place) {
                continue;
            }
            if place.len() > MAX_DEPTH {
                self.gave_up = true;
                return;
            }
            let set = self.bound.entry((m, name.to_owned())).or_default();
            if set.insert(place) {
                self.changed = true;
            }
            if set.len() > MAX_PLACES {
                self.gave_up = true;
            }
        }
    }

    /// The places `e` may stand for (a reference into `data`); any other expression is used,
    /// and stands for none. Each place is looked up, so its keys are read (the keys on the way
    /// to it come with them).
    fn places(&mut self, m: usize, e: &Expr) -> Vec<Place> {
        let places = self.places_of(m, e);
        for p in &places {
            if p.len() > MAX_DEPTH {
                self.gave_up = true;
            }
            self.read(p, false);
        }
        places
    }

    /// [`Analysis::places`], without reading them: the inner links of a reference.
    fn places_of(&mut self, m: usize, e: &Expr) -> Vec<Place> {
        let places = match e {
            Expr::Var { .. } => {
                let name = name_of(e).unwrap_or_default();
                if name == "data" {
                    vec![Vec::new()]
                } else if name == "_" {
                    Vec::new()
                } else {
                    let mut places: Vec<Place> =
                        self.imports[m].get(&name).cloned().into_iter().collect();
                    if let Some(bound) = self.bound.get(&(m, name)) {
                        places.extend(bound.iter().cloned());
                    }
                    places
                }
            }
            Expr::RefDot { refr, field, .. } => {
                let key = field
                    .1
                    .as_string()
                    .map(|s| Step::Key(s.to_string()))
                    .unwrap_or(Step::Any);
                let mut places = self.places_of(m, refr);
                for p in &mut places {
                    p.push(key.clone());
                }
                places
            }
            Expr::RefBrack { refr, index, .. } => {
                let key = step(index);
                self.used(m, index);
                let mut places = self.places_of(m, refr);
                for p in &mut places {
                    p.push(key.clone());
                }
                places
            }
            other => {
                self.used_other(m, other);
                Vec::new()
            }
        };
        places.into_iter().filter(|p| Self::followed(p)).collect()
    }

    /// `e`'s value is used whole.
    fn used(&mut self, m: usize, e: &Expr) {
        for p in self.places(m, e) {
            self.read(&p, true);
        }
    }

    /// An expression that is not a reference: what it is made of is used.
    fn used_other(&mut self, m: usize, e: &Expr) {
        match e {
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. } => {}
            Expr::Var { .. } | Expr::RefDot { .. } | Expr::RefBrack { .. } => self.used(m, e),
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for item in items {
                    self.used(m, item);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, k, v) in fields {
                    self.used(m, k);
                    self.used(m, v);
                }
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.query(m, query);
                self.used(m, term);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.query(m, query);
                self.used(m, key);
                self.used(m, value);
            }
            Expr::Call { fcn, params, .. } => self.call(m, fcn, params),
            Expr::UnaryExpr { expr, .. } => self.used(m, expr),
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. } => {
                self.used(m, lhs);
                self.used(m, rhs);
            }
            Expr::AssignExpr { op, lhs, rhs, .. } => self.assign(m, op, lhs, rhs),
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(key) = key {
                    self.used(m, key);
                }
                self.used(m, value);
                self.used(m, collection);
            }
            #[allow(unreachable_patterns)]
            _ => self.gave_up = true,
        }
    }

    /// `lhs := rhs` or `lhs = rhs`: a variable takes the other side's places; a pattern uses it.
    fn assign(&mut self, m: usize, op: &AssignOp, lhs: &Expr, rhs: &Expr) {
        let var = |e: &Expr| name_of(e).filter(|n| n != "data");
        match (var(lhs), var(rhs)) {
            (Some(l), Some(r)) if *op == AssignOp::Eq => {
                let to_l = self.places(m, rhs);
                let to_r = self.places(m, lhs);
                self.bind(m, &l, to_l);
                self.bind(m, &r, to_r);
            }
            (Some(l), _) => {
                let places = self.places(m, rhs);
                self.bind(m, &l, places);
            }
            (None, Some(r)) if *op == AssignOp::Eq => {
                let places = self.places(m, lhs);
                self.bind(m, &r, places);
            }
            _ => {
                self.used(m, lhs);
                self.used(m, rhs);
            }
        }
    }

    /// A call: a user function's parameters take the arguments' places; a builtin uses them.
    fn call(&mut self, m: usize, fcn: &Expr, params: &[Ref<Expr>]) {
        if let Some(defs) = self.function(m, fcn) {
            for (i, param) in params.iter().enumerate() {
                let mut bound = false;
                for (dm, args) in &defs {
                    match args.get(i).and_then(|a| name_of(a)) {
                        Some(name) => {
                            let places = self.places(m, param);
                            self.bind(*dm, &name, places);
                            bound = true;
                        }
                        // A pattern (or the output of a call with one more argument).
                        None => self.used(m, param),
                    }
                }
                if !bound {
                    self.used(m, param);
                }
            }
            return;
        }
        if dotted(fcn).is_some_and(|n| n == ["object", "get"])
            && let [object, key, default] = params
        {
            let path: Option<Vec<Step>> = match key.as_ref() {
                Expr::String { .. } | Expr::RawString { .. } => Some(vec![step(key)]),
                Expr::Array { items, .. } => items
                    .iter()
                    .map(|i| match step(i) {
                        Step::Any => None,
                        s => Some(s),
                    })
                    .collect(),
                _ => None,
            };
            self.used(m, default);
            match path {
                Some(path) if !path.is_empty() => {
                    for mut p in self.places(m, object) {
                        p.extend(path.iter().cloned());
                        self.read(&p, true);
                    }
                }
                _ => {
                    self.used(m, key);
                    self.used(m, object);
                }
            }
            return;
        }
        for param in params {
            self.used(m, param);
        }
    }

    /// The definitions of the user function `fcn` names, if it names one.
    fn function(&self, m: usize, fcn: &Expr) -> Option<Vec<Definition<'m>>> {
        let name = dotted(fcn)?;
        let first = name.first()?;
        let path: Vec<String> = if first == "data" {
            name[1..].to_vec()
        } else if let Some(import) = self.imports[m].get(first) {
            let mut path: Vec<String> = import
                .iter()
                .map(|s| match s {
                    Step::Key(k) => k.clone(),
                    _ => String::new(),
                })
                .collect();
            path.extend(name[1..].iter().cloned());
            path
        } else {
            [self.packages[m].clone(), name].concat()
        };
        self.functions.get(&path).cloned()
    }

    fn query(&mut self, m: usize, query: &Query) {
        for stmt in &query.stmts {
            self.literal(m, &stmt.literal);
            for WithModifier { refr, r#as, .. } in &stmt.with_mods {
                // Replacing part of data: nothing the analysis can follow.
                if !self.places(m, refr).is_empty() {
                    self.gave_up = true;
                }
                self.used(m, r#as);
            }
        }
    }

    fn literal(&mut self, m: usize, literal: &Literal) {
        match literal {
            Literal::SomeVars { .. } => {}
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                let places = self.members(m, collection);
                if let Some(key) = key
                    && name_of(key).is_none()
                {
                    self.used(m, key);
                }
                self.member(m, value, places);
            }
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => self.used(m, expr),
            Literal::Every {
                value,
                domain,
                query,
                ..
            } => {
                let places = self.members(m, domain);
                self.bind(m, value.text(), places);
                self.query(m, query);
            }
        }
    }

    /// The places of a collection's members.
    fn members(&mut self, m: usize, collection: &Expr) -> Vec<Place> {
        let mut places = self.places(m, collection);
        for p in &mut places {
            p.push(Step::Any);
            self.read(p, false);
        }
        places
    }

    /// A member bound to `value`: a variable takes its places; a pattern uses it whole.
    fn member(&mut self, m: usize, value: &Expr, places: Vec<Place>) {
        match name_of(value) {
            Some(name) if name != "data" => self.bind(m, &name, places),
            _ => {
                for p in places {
                    self.read(&p, true);
                }
                self.used(m, value);
            }
        }
    }

    /// Index expressions in a rule head's reference are used.
    fn head_ref(&mut self, m: usize, refr: &Expr) {
        match refr {
            Expr::RefBrack { refr, index, .. } => {
                self.used(m, index);
                self.head_ref(m, refr);
            }
            Expr::RefDot { refr, .. } => self.head_ref(m, refr),
            _ => {}
        }
    }

    fn rule(&mut self, m: usize, rule: &Rule) {
        match rule {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        self.head_ref(m, refr);
                        if let Some(a) = assign {
                            self.used(m, &a.value);
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        self.head_ref(m, refr);
                        if let Some(k) = key {
                            self.used(m, k);
                        }
                    }
                    // The parameters are bound by the calls.
                    RuleHead::Func { assign, .. } => {
                        if let Some(a) = assign {
                            self.used(m, &a.value);
                        }
                    }
                }
                for body in bodies {
                    if let Some(a) = &body.assign {
                        self.used(m, &a.value);
                    }
                    self.query(m, &body.query);
                }
            }
            Rule::Default { value, .. } => self.used(m, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Keep;
    use serde_json::{Value, json};

    fn reads(rego: &str) -> Reads {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(false);
        engine.add_policy("t.rego".into(), rego.into()).unwrap();
        inventory_reads(engine.get_modules())
    }

    fn ingress() -> Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "labels": {"team": "a"}},
            "spec": {"rules": [{"host": "a.example", "http": {"paths": [{"path": "/"}]}}],
                     "tls": [{"hosts": ["a.example"]}]}})
    }

    /// What the inventory keeps of [`ingress`] for `rego`.
    fn kept(rego: &str) -> Option<Value> {
        Keep::of([&reads(rego)])
            .prune("networking.k8s.io/v1", "Ingress", &ingress())
            .map(|v| v.into_owned())
    }

    #[test]
    fn follows_variables_iteration_and_functions() {
        let kept = kept(
            r#"package t
            violation contains {"msg": "dup"} if {
                some ns, other
                other := data.inventory.namespace[ns][_]["Ingress"][_]
                some rule in other.spec.rules
                same(rule, input.review.object.spec.rules[_])
            }
            same(a, b) if a.host == b.host
        "#,
        )
        .unwrap();
        assert_eq!(
            kept,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"rules": [{"host": "a.example"}]}})
        );
    }

    #[test]
    fn aliases_and_imports_of_data_inventory_are_followed() {
        let kept = kept(
            r#"package t
            import data.inventory as inv
            violation contains {"msg": m} if {
                o := inv.namespace["shop"]["networking.k8s.io/v1"].Ingress.web
                m := object.get(o, ["metadata", "labels"], {}).team
            }
        "#,
        )
        .unwrap();
        assert_eq!(kept["metadata"]["labels"], json!({"team": "a"}));
        assert!(kept.get("spec").is_none());
    }

    #[test]
    fn a_dynamic_key_under_the_object_keeps_it_whole() {
        let rego = r#"package t
            violation contains {"msg": "x"} if {
                o := data.inventory.namespace[_][_].Ingress[_]
                field := input.parameters.field
                o[field] == "x"
            }
        "#;
        assert_eq!(kept(rego), Some(ingress()));
    }

    #[test]
    fn an_object_that_escapes_into_a_builtin_or_a_rule_is_kept_whole() {
        for body in [
            "json.marshal(o) != \"\"",
            "count(o) > 0",
            "o == input.review.object",
            "x := [o]; count(x) > 0",
            "o.spec == input.review.object.spec",
        ] {
            let rego = format!(
                "package t\nviolation contains {{\"msg\": \"x\"}} if {{\n o := data.inventory.namespace[_][_].Ingress[_]\n {body}\n}}\n"
            );
            let kept = kept(&rego).unwrap();
            if body.starts_with("o.spec") {
                assert_eq!(kept["spec"], ingress()["spec"], "{body}");
            } else {
                assert_eq!(kept, ingress(), "{body}");
            }
        }
        let rego = r#"package t
            objects contains o if o := data.inventory.namespace[_][_].Ingress[_]
            violation contains {"msg": "x"} if count(objects) > 1
        "#;
        assert_eq!(kept(rego), Some(ingress()));
    }

    #[test]
    fn reading_the_whole_inventory_or_data_keeps_everything() {
        for body in [
            "x := data.inventory\ncount(x) > 0",
            "walk(data.inventory, [p, v])\nv == \"x\"",
            "some k\ndata[k].namespace",
            "k := \"inventory\"\ndata[k].cluster",
            "json.marshal(data) != \"\"",
            "x := data.inventory[input.parameters.where]\ncount(x) > 0",
        ] {
            let rego =
                format!("package t\nviolation contains {{\"msg\": \"x\"}} if {{\n{body}\n}}\n");
            assert!(reads(&rego).reads_everything(), "{body}");
            assert!(Keep::of([&reads(&rego)]).keeps_everything(), "{body}");
        }
    }

    #[test]
    fn templates_that_do_not_read_the_inventory_read_nothing() {
        let r = reads(
            r#"package t
            violation contains {"msg": "x"} if input.review.object.spec.hostNetwork
        "#,
        );
        assert!(r.is_empty());
        // A kind nothing reads is not kept at all.
        assert_eq!(
            kept("package t\nviolation contains {\"msg\": \"x\"} if false\n"),
            None
        );
    }

    #[test]
    fn libraries_functions_are_followed_across_modules() {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(false);
        engine
            .add_policy(
                "t.rego".into(),
                r#"package t
                import data.lib.hosts
                violation contains {"msg": "x"} if {
                    o := data.inventory.namespace[_][_].Ingress[_]
                    hosts.of(o)[_] == "a.example"
                }"#
                .into(),
            )
            .unwrap();
        engine
            .add_policy(
                "lib.rego".into(),
                r#"package lib.hosts
                of(ingress) := {h | h := ingress.spec.rules[_].host}"#
                    .into(),
            )
            .unwrap();
        let keep = Keep::of([&inventory_reads(engine.get_modules())]);
        let ingress = ingress();
        let kept = keep
            .prune("networking.k8s.io/v1", "Ingress", &ingress)
            .unwrap();
        assert_eq!(kept["spec"], json!({"rules": [{"host": "a.example"}]}));
    }

    /// The keys on the way to a place come with it: other kinds are not kept for them. A
    /// place looked up for its own sake (does the namespace hold anything?) keeps every kind.
    #[test]
    fn only_the_places_looked_up_keep_other_kinds() {
        let np = r#"package t
            violation contains {"msg": "x"} if {
                some p in data.inventory.namespace[input.ns]["networking.k8s.io/v1"].NetworkPolicy
                p.spec.podSelector == {}
            }
        "#;
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}});
        assert_eq!(
            Keep::of([&reads(np)]).prune("v1", "Namespace", &namespace),
            None
        );
        let any = r#"package t
            violation contains {"msg": "x"} if {
                held := data.inventory.namespace[input.ns]
            }
        "#;
        assert!(
            Keep::of([&reads(any)])
                .prune("v1", "Namespace", &namespace)
                .is_some()
        );
    }
}
