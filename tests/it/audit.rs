//! `palisade audit` on a directory of manifests as a GitOps repository holds them
//! (tests/data/audit), in all four formats, with its exit codes.

fn audit(args: &[&str]) -> (i32, String, String) {
    crate::common::palisade_cli(&[&["audit"], args].concat())
}

#[test]
fn the_table_lists_violations_by_namespace_object_and_constraint() {
    let (code, out, err) = audit(&["-f", "tests/data/audit"]);
    assert_eq!(code, 1, "a deny violation exists: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE  OBJECT"), "{out}");
    assert!(
        lines.iter().any(|l| l.starts_with("shop       Pod/debug")
            && l.contains("pod-security-restricted")
            && l.contains("deny")
            && l.contains("is privileged")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.contains("NetworkPolicy.networking.k8s.io/to-billing") && l.contains("warn")), "{out}");
    // payments holds its default-deny in the same input: nothing there.
    assert!(!out.contains("payments "), "{out}");
    assert!(
        out.contains("7 objects audited, 12 violations (11 deny, 1 warn, 0 dryrun)"),
        "{out}"
    );
    assert!(
        out.contains("default-deny coverage: 1 of 2 opted-in namespaces"),
        "{out}"
    );

    let (code, out, _) = audit(&["-f", "tests/data/audit/payments"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 violations"), "{out}");
}

#[test]
fn json_junit_and_policyreport_say_the_same() {
    let (code, out, _) = audit(&["-f", "tests/data/audit", "-o", "json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let debug = json["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "debug")
        .unwrap();
    assert_eq!(debug["namespace"], "shop");
    assert_eq!(debug["violations"].as_array().unwrap().len(), 8);
    assert_eq!(json["coverage"]["lacking"], serde_json::json!(["shop"]));

    let (code, out, _) = audit(&["-f", "tests/data/audit", "-o", "junit"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("<testsuites name=\"palisade audit\" tests=\"9\" failures=\"2\">"),
        "{out}"
    );
    assert!(out.contains("<testcase classname=\"shop\" name=\"Pod/debug\">\n      <failure type=\"PalisadePodSecurity\" message=\"8 deny violations: "), "{out}");
    assert!(
        out.contains("<testcase classname=\"payments\" name=\"Pod/api\"/>"),
        "{out}"
    );

    let (code, out, _) = audit(&["-f", "tests/data/audit", "-o", "policyreport"]);
    assert_eq!(code, 1);
    let list: serde_json::Value = yaml_serde::from_str(&out).unwrap();
    let items = list["items"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap(),
                i["metadata"]["namespace"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("PolicyReport", "payments"),
            ("PolicyReport", "shop"),
            ("ClusterPolicyReport", "")
        ]
    );
    assert_eq!(items[1]["summary"]["fail"], 11);
    assert_eq!(items[1]["summary"]["warn"], 1);
    assert_eq!(items[0]["summary"]["pass"], 2);
    assert_eq!(items[2]["results"][0]["resources"][0]["name"], "shop");
}

#[test]
fn bad_input_and_bad_bundles_exit_2_with_the_reason() {
    let (code, _, err) = audit(&["-f", "tests/data/audit/missing"]);
    assert_eq!(code, 2);
    assert!(err.contains("tests/data/audit/missing"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "kind: [\n").unwrap();
    let (code, _, err) = audit(&["-f", &dir.path().display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("broken.yaml"), "{err}");
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(
        policies.path().join("template.yaml"),
        "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {name: k}\nspec: {}\n",
    )
    .unwrap();
    let p = policies.path().display().to_string();
    let (code, _, err) = audit(&["-f", "tests/data/audit", "--policies", &p]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot load the policy bundle"), "{err}");
}
