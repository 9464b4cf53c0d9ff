use serde_json::json;

use super::*;

fn program(source: Value) -> Result<Program, String> {
    let source = Source::parse(&source, "spec.targets[0].code[0].source")?;
    Program::compile("ConstraintTemplate t", &source)
}

fn review(op: &str, object: Value, old: Value) -> Request {
    Request::new(
        &json!({"operation": op, "object": object, "oldObject": old, "kind": {"group": "", "version": "v1", "kind": "Pod"}}),
        None,
    )
}

fn constraint(parameters: Value) -> CelValue {
    constraint_value(
        &json!({"apiVersion": "constraints.gatekeeper.sh/v1beta1", "kind": "T", "metadata": {"name": "c"}, "spec": {"parameters": parameters}}),
    )
}

#[test]
fn smoke() {
    let p = program(json!({"validations": [{"expression": "variables.anyObject.metadata.name.startsWith(variables.params.prefix)", "messageExpression": "'name must start with ' + variables.params.prefix"}]})).unwrap();
    let pod = json!({"metadata": {"name": "web"}});
    let got = p.evaluate(
        &review("CREATE", pod.clone(), Value::Null),
        &constraint(json!({"prefix": "app-"})),
        Duration::from_secs(1),
    );
    assert_eq!(got, Ok(vec!["name must start with app-".to_owned()]));
    let got = p.evaluate(
        &review("CREATE", pod, Value::Null),
        &constraint(json!({"prefix": "we"})),
        Duration::from_secs(1),
    );
    assert_eq!(got, Ok(vec![]));
}
