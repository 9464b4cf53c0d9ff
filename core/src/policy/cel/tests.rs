//! The CEL engine's semantics and limits, from the side of a tenant who wants a constraint to
//! pass without holding, and of an author who wants a clear error.

use serde_json::json;

use super::*;

const AT: &str = "spec.targets[0].code[0].source";
const SECOND: Duration = Duration::from_secs(1);

fn program(source: Value) -> Result<Program, String> {
    let source = Source::parse(&source, AT)?;
    Program::compile("ConstraintTemplate t", &source)
}

fn request(op: &str, object: Value, old: Value) -> Request<'static> {
    let mut review = json!({
        "uid": "1",
        "operation": op,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "userInfo": {"username": "alice", "groups": ["dev"]},
        "namespace": "shop",
        "object": object,
        "oldObject": old,
    });
    // Palisade's reviews carry the old object as `object` on DELETE, as Gatekeeper's Rego sees it.
    if op == "DELETE" {
        review["object"] = review["oldObject"].clone();
    }
    // A test's review lives as long as the test: leaked, so that the request may borrow it.
    Request::new(Box::leak(Box::new(review)), None)
}

fn create(object: Value) -> Request<'static> {
    request("CREATE", object, Value::Null)
}

fn constraint(parameters: Value) -> CelParams {
    CelParams::new(&json!({
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": "T",
        "metadata": {"name": "c"},
        "spec": {"parameters": parameters},
    }))
}

fn no_parameters() -> CelParams {
    CelParams::new(&json!({"kind": "T", "metadata": {"name": "c"}, "spec": {}}))
}

fn check(expression: &str) -> Program {
    program(json!({"validations": [{"expression": expression, "message": "no"}]})).unwrap()
}

/// The cost limit of the tests that reach it: a debug build on a busy machine walks about 50,000
/// elements a second, so the default limit would take longer than a test should.
const TEST_COST: u64 = 20_000;

fn metered(expression: &str) -> Program {
    check(expression).with_cost_limit(TEST_COST)
}

fn pod() -> Value {
    json!({"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 1, "ratio": 1.5, "containers": [{"name": "a", "image": "x"}]}})
}

#[test]
fn a_violation_carries_the_message_expression_and_params_come_from_the_constraint() {
    let p = program(json!({"validations": [{
        "expression": "variables.anyObject.metadata.name.startsWith(variables.params.prefix)",
        "messageExpression": "'name must start with ' + variables.params.prefix",
    }]}))
    .unwrap();
    assert_eq!(
        p.evaluate(
            &create(pod()),
            &constraint(json!({"prefix": "app-"})),
            SECOND
        ),
        Ok(vec!["name must start with app-".to_owned()])
    );
    assert_eq!(
        p.evaluate(&create(pod()), &constraint(json!({"prefix": "we"})), SECOND),
        Ok(vec![])
    );
}

#[test]
fn messages_fall_back_as_kubernetes_makes_them() {
    let p = program(json!({"validations": [
        {"expression": "false", "messageExpression": "''", "message": "empty expression"},
        {"expression": "false", "messageExpression": "'two\\nlines'", "message": "two lines"},
        {"expression": "false", "messageExpression": "42", "message": "not a string"},
        {"expression": "false", "messageExpression": "object.nope", "message": "failing"},
        {"expression": "false", "messageExpression": "'  padded  '"},
        {"expression": " 1 == 2 "},
    ]}))
    .unwrap();
    assert_eq!(
        p.evaluate(&create(pod()), &no_parameters(), SECOND),
        Ok(vec![
            "empty expression".to_owned(),
            "two lines".to_owned(),
            "not a string".to_owned(),
            "failing".to_owned(),
            "padded".to_owned(),
            "failed expression: 1 == 2".to_owned(),
        ])
    );
}

#[test]
fn object_is_null_on_delete_and_any_object_is_the_old_one() {
    let p = program(json!({"validations": [
        {"expression": "object == null", "message": "object is set"},
        {"expression": "variables.anyObject.metadata.name == 'web'", "message": "anyObject is not the old object"},
        {"expression": "request.operation == 'DELETE'", "message": "not a delete"},
    ]}))
    .unwrap();
    assert_eq!(
        p.evaluate(
            &request("DELETE", Value::Null, pod()),
            &no_parameters(),
            SECOND
        ),
        Ok(vec![])
    );
    let created = p
        .evaluate(&create(pod()), &no_parameters(), SECOND)
        .unwrap();
    assert_eq!(
        created,
        vec!["object is set".to_owned(), "not a delete".to_owned()]
    );
}

#[test]
fn old_object_is_null_on_create_and_the_request_has_no_objects() {
    let p = check(
        "oldObject == null && !has(request.object) && !has(request.oldObject) && request.userInfo.username == 'alice' && request.namespace == 'shop' && request.kind.kind == 'Pod'",
    );
    assert_eq!(
        p.evaluate(&create(pod()), &no_parameters(), SECOND),
        Ok(vec![])
    );
    let update = request("UPDATE", pod(), pod());
    assert_eq!(
        p.evaluate(&update, &no_parameters(), SECOND),
        Ok(vec!["no".to_owned()])
    );
}

#[test]
fn params_are_null_without_parameters_as_in_gatekeeper() {
    let p = check("variables.params == null && params.metadata.name == 'c'");
    assert_eq!(
        p.evaluate(&create(pod()), &no_parameters(), SECOND),
        Ok(vec![])
    );
    // A template that reads a parameter of a constraint without any fails closed, as it does
    // under Gatekeeper (has() of a field of null is an error).
    let p = check("!has(variables.params.exempt)");
    let err = p
        .evaluate(&create(pod()), &no_parameters(), SECOND)
        .unwrap_err();
    assert!(matches!(err, EvalError::Engine(_)), "{err:?}");
}

#[test]
fn numbers_read_as_kubernetes_decodes_them() {
    let p = check(
        "object.spec.replicas == 1 && type(object.spec.replicas) == int && object.spec.ratio == 1.5 && type(object.spec.big) == double",
    );
    let mut pod = pod();
    pod["spec"]["big"] = json!(18_446_744_073_709_551_615_u64);
    assert_eq!(
        p.evaluate(&create(pod), &no_parameters(), SECOND),
        Ok(vec![])
    );
}

#[test]
fn variables_are_evaluated_in_order_and_a_failing_one_is_named_when_read() {
    let p = program(json!({
        "variables": [
            {"name": "containers", "expression": "object.spec.containers"},
            {"name": "names", "expression": "variables.containers.map(c, c.name)"},
            {"name": "broken", "expression": "object.spec.nothing.here"},
        ],
        "validations": [
            {"expression": "variables.names == ['a']", "message": "names"},
            {"expression": "size(variables.broken) == 0", "message": "broken"},
        ],
    }))
    .unwrap();
    let err = p
        .evaluate(&create(pod()), &no_parameters(), SECOND)
        .unwrap_err();
    let EvalError::Engine(message) = err else {
        panic!("{err:?}")
    };
    assert!(
        message.starts_with("ConstraintTemplate t: spec.targets[0].code[0].source.validations[1].expression: \"size(variables.broken) == 0\" failed:")
            && message.contains("; variables.broken failed: "),
        "{message}"
    );
}

#[test]
fn a_failure_fails_closed_unless_the_failure_policy_is_ignore() {
    let source = |policy: &str| {
        json!({"failurePolicy": policy, "validations": [
            {"expression": "object.spec.missing.deeper == 1", "message": "no"},
            {"expression": "object.metadata.name == 'other'", "message": "wrong name"},
        ]})
    };
    let err = program(source("Fail"))
        .unwrap()
        .evaluate(&create(pod()), &no_parameters(), SECOND)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("validations[0].expression: \"object.spec.missing.deeper == 1\" failed"),
        "{err}"
    );
    assert_eq!(
        program(source("Ignore"))
            .unwrap()
            .evaluate(&create(pod()), &no_parameters(), SECOND),
        Ok(vec!["wrong name".to_owned()])
    );
    // Not a bool: an error, not a pass.
    let err = check("object.metadata.name")
        .evaluate(&create(pod()), &no_parameters(), SECOND)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("a validation must be a bool, not string"),
        "{err}"
    );
}

#[test]
fn match_conditions_skip_the_constraint_only_when_one_is_false() {
    let source = |conditions: Value, policy: &str| json!({"failurePolicy": policy, "matchCondition": conditions, "validations": [{"expression": "false", "message": "denied"}]});
    let run = |conditions: Value, policy: &str| {
        program(source(conditions, policy)).unwrap().evaluate(
            &create(pod()),
            &no_parameters(),
            SECOND,
        )
    };
    let denied = Ok(vec!["denied".to_owned()]);
    assert_eq!(
        run(json!([{"name": "a", "expression": "true"}]), "Fail"),
        denied
    );
    assert_eq!(
        run(json!([{"name": "a", "expression": "false"}]), "Fail"),
        Ok(vec![])
    );
    // A false condition decides even beside one that fails.
    assert_eq!(
        run(
            json!([{"name": "a", "expression": "object.nope"}, {"name": "b", "expression": "false"}]),
            "Fail"
        ),
        Ok(vec![])
    );
    let err = run(
        json!([{"name": "a", "expression": "object.nope"}, {"name": "b", "expression": "true"}]),
        "Fail",
    )
    .unwrap_err();
    assert!(err.to_string().contains("matchConditions[0]"), "{err}");
    assert_eq!(
        run(
            json!([{"name": "a", "expression": "object.nope"}]),
            "Ignore"
        ),
        Ok(vec![])
    );
    // A condition that is not a bool does not let the object through.
    assert!(run(json!([{"name": "a", "expression": "'false'"}]), "Fail").is_err());
    // The Kubernetes spelling reads the same.
    let p = program(json!({"matchConditions": [{"name": "a", "expression": "false"}], "validations": [{"expression": "false"}]})).unwrap();
    assert_eq!(
        p.evaluate(&create(pod()), &no_parameters(), SECOND),
        Ok(vec![])
    );
}

#[test]
fn namespace_object_is_read_when_known() {
    let p = check("namespaceObject.metadata.labels.tier == 'gold'");
    assert!(p.uses_namespace_object());
    assert!(!check("true").uses_namespace_object());
    let review = json!({"operation": "CREATE", "object": pod(), "namespace": "shop"});
    let ns = json!({"metadata": {"name": "shop", "labels": {"tier": "gold"}}});
    assert_eq!(
        p.evaluate(&Request::new(&review, Some(&ns)), &no_parameters(), SECOND),
        Ok(vec![])
    );
    // Unknown: null, and reading a field of it fails the constraint closed.
    assert!(
        p.evaluate(&Request::new(&review, None), &no_parameters(), SECOND)
            .is_err()
    );
}

/// `size` × `size` × `size` elements: far past the tests' cost limit for a list of 50.
fn bomb(items: usize) -> Request<'static> {
    create(json!({"spec": {"items": (0..items).collect::<Vec<_>>()}}))
}

#[test]
fn a_comprehension_bomb_stops_at_the_cost_limit() {
    let p = metered(
        "object.spec.items.all(a, object.spec.items.all(b, object.spec.items.all(c, a + b + c >= 0)))",
    );
    let err = p
        .evaluate(&bomb(50), &no_parameters(), Duration::from_secs(60))
        .unwrap_err();
    assert!(err.to_string().contains("cost limit of 20000"), "{err}");
    // The same shape on a small list is within the limit (20 + 20² + 20³ elements).
    assert_eq!(
        p.evaluate(&bomb(20), &no_parameters(), Duration::from_secs(60)),
        Ok(vec![])
    );
    assert_eq!(COST_LIMIT, 1_000_000);
}

#[test]
fn a_limit_reached_inside_an_absorbed_error_still_stops_the_constraint() {
    // `error || true` is true in CEL: without the meter, the bomb would pass as "true".
    let p = metered(
        "object.spec.items.all(a, object.spec.items.all(b, object.spec.items.all(c, a + b + c >= 0))) && false || true",
    );
    let err = p
        .evaluate(&bomb(50), &no_parameters(), Duration::from_secs(60))
        .unwrap_err();
    assert!(err.to_string().contains("cost limit"), "{err}");
    let p = check("object.spec.items.exists(a, a < 0) || true");
    let err = p
        .evaluate(&bomb(10), &no_parameters(), Duration::ZERO)
        .unwrap_err();
    assert_eq!(err, EvalError::Timeout(Duration::ZERO));
}

#[test]
fn compile_errors_name_the_field_the_expression_and_the_position() {
    let err = program(json!({"validations": [{"expression": "true &&\n  has(objct.metadata)"}]}))
        .unwrap_err();
    assert_eq!(
        err,
        "spec.targets[0].code[0].source.validations[0].expression: \"true && has(objct.metadata)\" does not compile: line 2, column 7: undeclared reference to \"objct\"; expressions read object, oldObject, request, params, namespaceObject, variables"
    );
    let err =
        program(json!({"validations": [{"expression": "object.metadata.name =="}]})).unwrap_err();
    assert!(
        err.starts_with("spec.targets[0].code[0].source.validations[0].expression: \"object.metadata.name ==\" does not compile: line 1, column "),
        "{err}"
    );
    let err = program(json!({"variables": [
        {"name": "a", "expression": "variables.b"},
        {"name": "b", "expression": "1"},
    ], "validations": [{"expression": "true"}]}))
    .unwrap_err();
    assert!(
        err.contains("variables[0].expression")
            && err.contains("variables.b is not declared (declared before it: anyObject, params)"),
        "{err}"
    );
    let err = check_err("authorizer.group('').resource('pods').check('get').allowed()");
    assert!(err.contains("gives no authorizer"), "{err}");
    let err = program(json!({"validations": [{"expression": "variables.nope"}]})).unwrap_err();
    assert!(err.contains("variables.nope is not declared"), "{err}");
}

fn check_err(expression: &str) -> String {
    program(json!({"validations": [{"expression": expression}]})).unwrap_err()
}

#[test]
fn comprehension_variables_may_take_any_name() {
    let p = check(
        "object.spec.containers.all(object, object.name == 'a') && [1].exists(x, [2].all(y, x < y))",
    );
    assert_eq!(
        p.evaluate(&create(pod()), &no_parameters(), SECOND),
        Ok(vec![])
    );
}

#[test]
fn look_alike_and_misplaced_fields_are_refused_not_ignored() {
    for (source, field) in [
        (
            json!({"validations": [{"expression": "true"}], "matchconditions": []}),
            "source.matchconditions: unknown field",
        ),
        (
            json!({"validations": [{"expression": "true", "messageExpresion": "'x'"}]}),
            "validations[0].messageExpresion: unknown field",
        ),
        (
            json!({"validations": [{"expression": "true"}], "matchCondition": [], "matchConditions": []}),
            "has both matchCondition and matchConditions",
        ),
        (json!({"validations": []}), "validations: required"),
        (
            json!({"validations": [{"expression": "  "}]}),
            "validations[0].expression: is empty",
        ),
        (
            json!({"validations": [{"expression": "true"}], "failurePolicy": "fail"}),
            "failurePolicy: \"fail\" is not Fail or Ignore",
        ),
        (
            json!({"validations": [{"expression": "true"}], "variables": [{"name": "params", "expression": "1"}]}),
            "variables[0].name: \"params\" is Gatekeeper's own variable",
        ),
        (
            json!({"validations": [{"expression": "true"}], "variables": [{"name": "gatekeeper_internal_x", "expression": "1"}]}),
            "starts with \"gatekeeper_internal_\"",
        ),
        (
            json!({"validations": [{"expression": "true"}], "variables": [{"name": "a-b", "expression": "1"}]}),
            "is not a CEL identifier",
        ),
        (
            json!({"validations": [{"expression": "true"}], "variables": [{"name": "a", "expression": "1"}, {"name": "a", "expression": "2"}]}),
            "a second variable named \"a\"",
        ),
        (
            json!({"validations": [{"expression": "true"}], "generateVAP": "yes"}),
            "generateVAP: \"yes\" is not true or false",
        ),
    ] {
        let err = Source::parse(&source, AT).unwrap_err();
        assert!(err.contains(field), "{source}: {err}");
    }
}

#[test]
fn a_map_literal_that_repeats_a_key_keeps_the_last_as_kubernetes_does() {
    let p = check("{'a': 1, 'a': 2}['a'] == 2");
    assert_eq!(
        p.evaluate(&create(pod()), &no_parameters(), SECOND),
        Ok(vec![])
    );
}

/// Evaluates `expression` alone, as a validation of the Pod above: `Ok(true)` when it holds.
fn holds(expression: &str) -> Result<bool, String> {
    let p = program(json!({"validations": [{"expression": expression}]}))?;
    p.evaluate(&create(pod()), &no_parameters(), SECOND)
        .map(|messages| messages.is_empty())
        .map_err(|e| e.to_string())
}

/// cel-go's documented examples of `cel.bind` and the two-variable comprehensions
/// (ext.Bindings, ext.TwoVarComprehensions), written as checks that hold.
#[test]
fn bind_and_two_variable_comprehensions_read_as_in_kubernetes() {
    for e in [
        "cel.bind(a, 'hello', cel.bind(b, 'world', a + b + b + a)) == 'helloworldworldhello'",
        "cel.bind(valid, [1, 2, 3], [3, 4, 5].exists(e, e in valid))",
        "[1].all(x, cel.bind(x, 2, x == 2))",
        "[1, 2, 3].all(i, j, i < j)",
        "!{'hello': 'world', 'taco': 'taco'}.all(k, v, k != v)",
        "{'h': ['hello', 'hi'], 'j': ['joke', 'jog']}.all(k, vals, vals.all(v, v.startsWith(k)))",
        "![1, 2, 3].exists(i, j, i > j)",
        "{'greeting': 'hello', 'farewell': 'goodbye'}.exists(k, v, k.startsWith('good') || v.endsWith('bye'))",
        "![1, 2, 1].existsOne(i, v, i == 1 || v == 1)",
        "{'a': 1, 'b': 2}.existsOne(k, v, v == 2)",
        "[1, 2, 3].transformList(i, v, i > 0, v * 2) == [4, 6]",
        "{'greeting': 'hello'}.transformList(k, v, k + ': ' + v) == ['greeting: hello']",
        "[1, 2, 3].transformMap(i, v, v % 2 == 1, v * 2) == {0: 2, 2: 6}",
        "{'greeting': 'hello'}.transformMap(k, v, v + '!') == {'greeting': 'hello!'}",
        "{'a': 'b'}.transformMapEntry(k, v, {v: k}) == {'b': 'a'}",
        "object.?spec.?nothing.orValue(1) == 1",
        "[1, 2][?5].orValue(0) == 0",
        "[1, 2].existsOne(x, x == 1) && [1, 2].exists_one(x, x == 2)",
        "'%s-%d'.format(['a', 1]) == 'a-1'",
        "timestamp('2024-01-01T00:00:00Z') < timestamp('2025-01-01T00:00:00Z') && duration('1h') > duration('1m')",
        "base64.encode(b'a') == 'YQ==' && math.greatest(1, 2) == 2",
    ] {
        assert_eq!(holds(e), Ok(true), "{e}");
    }
    // A map entry whose key is already there is an error, not a silent overwrite.
    let err =
        holds("{'a': 'x', 'b': 'x'}.transformMapEntry(k, v, {v: k}).size() == 1").unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    let err = holds("[1].all(i, i, true)").unwrap_err();
    assert!(err.contains("both named \"i\""), "{err}");
    let err = holds("1.all(i, v, true)").unwrap_err();
    assert!(err.contains("ranges over a list or a map"), "{err}");
}

#[test]
fn bound_and_two_variable_comprehensions_are_metered() {
    for e in [
        "cel.bind(l, object.spec.items, l.all(a, l.all(b, l.all(c, true))))",
        "object.spec.items.all(i, a, object.spec.items.all(j, b, object.spec.items.all(k, c, true)))",
    ] {
        let err = metered(e)
            .evaluate(&bomb(50), &no_parameters(), Duration::from_secs(60))
            .unwrap_err();
        assert!(err.to_string().contains("cost limit"), "{e}: {err}");
    }
}

/// `variables` read whole (`has(variables.x)`, `variables['x']`) holds every variable,
/// Gatekeeper's included, as reading them one by one does.
#[test]
fn variables_read_whole_hold_every_variable() {
    let p = program(json!({
        "variables": [
            {"name": "a", "expression": "1"},
            {"name": "broken", "expression": "object.nope"},
        ],
        "validations": [{"expression": "has(variables.a) && !has(variables.broken) && variables['a'] == 1 && has(variables.anyObject.metadata) && variables.params.prefix == 'x'"}],
    }))
    .unwrap();
    assert!(p.reads_variables_whole);
    assert_eq!(
        p.evaluate(&create(pod()), &constraint(json!({"prefix": "x"})), SECOND),
        Ok(vec![])
    );
    assert!(!check("variables.anyObject.metadata.name == 'web'").reads_variables_whole);
}

/// The review's maps and lists are converted as they are read, and the constraint's are shared by
/// their copies: to every operation they must be the built-in `map` and `list`, from either side
/// of an operator, or a tenant's object could compare unequal to what it equals (an exemption
/// lost, a denial skipped) or fail to read.
#[test]
fn the_reviews_and_the_constraints_maps_and_lists_read_as_built_in_ones() {
    let pod = || {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "db"}, "annotations": {}},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}], "volumes": []},
        })
    };
    let holding = [
        // Equality from both sides, with literals and with the constraint's values.
        "object.metadata.labels == {'app': 'web', 'tier': 'db'}",
        "{'tier': 'db', 'app': 'web'} == object.metadata.labels",
        "object.metadata.labels != {'app': 'web'}",
        "{'app': 'web'} != object.metadata.labels",
        "object.spec.volumes == []",
        "[] == object.spec.volumes",
        "object.metadata.annotations == {}",
        "{} == object.metadata.annotations",
        "object.spec.containers[0] == {'name': 'a', 'image': 'x'}",
        "{'name': 'a', 'image': 'x'} == object.spec.containers[0]",
        "object.spec.containers.map(c, c.name) == ['a', 'b']",
        "params.spec.parameters.labels == object.metadata.labels",
        "object.metadata.labels == params.spec.parameters.labels",
        "variables.params.names == object.spec.containers.map(c, c.name)",
        "object.spec.containers.map(c, c.name) == variables.params.names",
        "object.spec.containers == object.spec.containers",
        // Membership, both ways round.
        "object.metadata.labels in [{'app': 'web', 'tier': 'db'}]",
        "{'app': 'web', 'tier': 'db'} in [object.metadata.labels]",
        "'app' in object.metadata.labels",
        "!('ap' in object.metadata.labels)",
        "object.spec.containers[1] in object.spec.containers",
        "{'name': 'b', 'image': 'y'} in object.spec.containers",
        // Reading, sizes, types, iteration, optionals.
        "size(object.metadata.labels) == 2 && object.metadata.labels.size() == 2",
        "size(object.spec.containers) == 2 && size(object.spec.volumes) == 0",
        "type(object.metadata) == map && type(object.spec.containers) == list",
        "object.metadata.labels.all(k, k in ['app', 'tier'])",
        "object.metadata.labels.exists(k, object.metadata.labels[k] == 'db')",
        "object.spec.containers.exists_one(c, c.image == 'y')",
        "has(object.metadata.labels) && !has(object.metadata.namespace)",
        "!has(object.spec.containers[0].securityContext)",
        "object.?metadata.?namespace.orValue('none') == 'none'",
        "object.spec.containers[?5].orValue('none') == 'none'",
        "object.spec.containers[1u].name == 'b'",
        "object.spec.containers[1.0].name == 'b'",
        "(object.spec.containers + object.spec.containers).size() == 4",
        "(object.spec.containers + [1])[2] == 1",
        "([0] + object.spec.containers)[1].name == 'a'",
        "object.spec.containers.filter(c, c.name == 'b')[0].image == 'y'",
        "object.spec.containers.map(c, c.image).join(',') == 'x,y'",
        "cel.bind(cs, object.spec.containers, cs[0].name + cs[1].name == 'ab')",
        "string(object.metadata.labels.app) == 'web'",
        "dyn(object.metadata.labels)['tier'] == 'db'",
    ];
    let params = constraint(json!({"labels": {"app": "web", "tier": "db"}, "names": ["a", "b"]}));
    for expression in holding {
        let p = check(expression);
        assert_eq!(
            p.evaluate(&create(pod()), &params, SECOND),
            Ok(vec![]),
            "{expression} must hold"
        );
    }
    // What fails on a built-in fails the same way here (and so fails closed).
    for (expression, error) in [
        ("object.metadata.nope == 1", "No such key: nope"),
        (
            "object.spec.containers[2].name == 'c'",
            "Index out of bounds",
        ),
        (
            "object.spec.containers[-1].name == 'c'",
            "Index out of bounds",
        ),
        ("object.metadata.labels[1] == 'x'", "No such key: 1"),
        ("object.spec.containers['a'] == 1", "'_[_]'"),
    ] {
        let p = check(expression);
        let e = p
            .evaluate(&create(pod()), &params, SECOND)
            .unwrap_err()
            .to_string();
        assert!(e.contains(error), "{expression}: {e}");
    }
}

/// A variable that reads only the constraint is evaluated at the constraint's first review and
/// kept: it must keep being what it was, its error included, while everything that reads the
/// review is evaluated at every review, and a constraint with other parameters, or the same
/// constraint under a recompiled template, gets its own.
#[test]
fn variables_that_read_only_the_constraint_are_kept_per_constraint_and_program() {
    let source = json!({
        "variables": [
            {"name": "prefixes", "expression": "variables.params.exempt.filter(i, i.endsWith('*')).map(i, i.replace('*', ''))"},
            {"name": "broken", "expression": "variables.params.nope.size() > 0"},
            {"name": "names", "expression": "object.spec.containers.map(c, c.name)"},
            {"name": "shadow", "expression": "[1].map(object, object + 1)"},
            {"name": "bad", "expression": "variables.names.filter(n, !variables.prefixes.exists(p, n.startsWith(p)))"},
        ],
        "validations": [
            {"expression": "size(variables.bad) == 0", "messageExpression": "'not exempt: ' + variables.bad.join(',')"},
            {"expression": "variables.shadow == [2]", "message": "shadow"},
        ],
    });
    let p = program(source.clone()).unwrap();
    // prefixes and broken read only the constraint; names, shadow (a comprehension variable named
    // like a root) and bad read more, or may.
    assert_eq!(p.constant, [true, true, false, false, false]);
    let pod = |names: &[&str]| json!({"spec": {"containers": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()}});
    let first = constraint(json!({"exempt": ["sys-*", "x"]}));
    for _ in 0..3 {
        assert_eq!(
            p.evaluate(&create(pod(&["sys-a", "web"])), &first, SECOND),
            Ok(vec!["not exempt: web".to_owned()])
        );
        assert_eq!(
            p.evaluate(&create(pod(&["sys-b"])), &first, SECOND),
            Ok(vec![])
        );
    }
    let kept = first
        .0
        .constants
        .get()
        .expect("kept after the first review");
    assert_eq!(kept.0, p.id);
    assert!(
        matches!(&kept.1[1], Some(Err(e)) if e.contains("nope")),
        "{:?}",
        kept.1[1]
    );
    // Another constraint: its own values.
    let second = constraint(json!({"exempt": ["web*"]}));
    assert_eq!(
        p.evaluate(&create(pod(&["sys-a", "web"])), &second, SECOND),
        Ok(vec!["not exempt: sys-a".to_owned()])
    );
    // The failing constant is named when read, at every review.
    let reads_broken = program(json!({
        "variables": source["variables"],
        "validations": [{"expression": "variables.broken"}],
    }))
    .unwrap();
    for _ in 0..2 {
        let e = reads_broken
            .evaluate(&create(pod(&["a"])), &first, SECOND)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("variables.broken failed") && e.contains("nope"),
            "{e}"
        );
    }
    // The same constraint under another program (a reloaded template) is not given this one's.
    let recompiled = program(json!({
        "variables": [{"name": "prefixes", "expression": "['w']"}, {"name": "bad", "expression": "object.spec.containers.map(c, c.name).filter(n, !variables.prefixes.exists(p, n.startsWith(p)))"}],
        "validations": [{"expression": "size(variables.bad) == 0", "messageExpression": "variables.bad.join(',')"}],
    }))
    .unwrap();
    assert_eq!(
        recompiled.evaluate(&create(pod(&["sys-a", "web"])), &first, SECOND),
        Ok(vec!["sys-a".to_owned()])
    );
    assert_eq!(
        p.evaluate(&create(pod(&["sys-a", "web"])), &first, SECOND),
        Ok(vec!["not exempt: web".to_owned()])
    );
}

/// A constant stopped by the cost limit at one review is not kept as its value: the limit is
/// that review's.
#[test]
fn a_constant_stopped_by_a_limit_is_not_kept() {
    let p = program(json!({
        "variables": [{"name": "big", "expression": "variables.params.items.map(x, variables.params.items.map(y, x + y))"}],
        "validations": [{"expression": "size(variables.big) > 0"}],
    }))
    .unwrap()
    .with_cost_limit(TEST_COST);
    let items: Vec<u32> = (0..200).collect();
    let params = constraint(json!({"items": items}));
    for _ in 0..2 {
        let e = p
            .evaluate(&create(pod()), &params, SECOND)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exceeded the cost limit"), "{e}");
        assert!(params.0.constants.get().is_none());
    }
}

/// `matches` keeps its patterns compiled: every form of the call answers as cel-rust's, an
/// invalid pattern fails with cel-rust's error at every review, and a template with more patterns
/// than the cache holds still matches each.
#[test]
fn matches_answers_as_cel_rusts_with_its_patterns_kept() {
    for (expression, holds_) in [
        ("object.metadata.name.matches('^w.b$')", true),
        ("matches(object.metadata.name, '^w.b$')", true),
        ("object.metadata.name.matches('^x')", false),
        ("object.metadata.labels.all(k, k.matches('^[a-z]+$'))", true),
        ("['a1', 'b2'].all(s, s.matches('[0-9]'))", true),
    ] {
        for _ in 0..2 {
            assert_eq!(holds(expression), Ok(holds_), "{expression}");
        }
    }
    for _ in 0..2 {
        let e = holds("object.metadata.name.matches('(')").unwrap_err();
        assert!(e.contains("'(' not a valid regex"), "{e}");
    }
    let e = holds("object.metadata.name.matches(1)").unwrap_err();
    assert!(e.contains("no matching overload"), "{e}");
    for i in 0..(k8s::regex::CACHED_PATTERNS + 20) {
        let pattern = format!("^web$|^n{i}$");
        assert_eq!(
            k8s::regex::cached(&pattern).map(|r| r.is_match("web")).ok(),
            Some(true)
        );
        assert_eq!(
            k8s::regex::cached(&pattern)
                .map(|r| r.is_match(&format!("n{i}")))
                .ok(),
            Some(true)
        );
    }
}

/// `has(variables.x)` inside a variable sees the variables declared before it, as in Kubernetes,
/// where `variables` holds every declared one (the library's seccomp templates read
/// `has(variables.hasPodSeccomp)` this way; reading it as false denied Pods with a Pod-level
/// profile).
#[test]
fn a_variable_reading_variables_whole_sees_those_before_it() {
    let p = program(json!({
        "variables": [
            {"name": "first", "expression": "has(object.spec)"},
            {"name": "seen", "expression": "has(variables.first) && variables.first"},
        ],
        "validations": [
            {"expression": "variables.seen", "message": "first not seen"},
        ],
    }))
    .unwrap();
    assert_eq!(
        p.evaluate(&create(pod()), &no_parameters(), SECOND),
        Ok(vec![])
    );
}
