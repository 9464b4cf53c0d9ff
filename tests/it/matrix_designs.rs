//! The other zero-trust designs of issue 31 as communication matrices
//! (`tests/data/guides/matrices/`): three-tier, namespace isolation, database isolation and the
//! external API. Each satisfies its matrix and refuses every single-rule widening
//! ([`check_design`]), and is attacked the way its design says it must not be, through the one
//! decision path. The external API guide as written reaches RFC 1918 through 0.0.0.0/0: its
//! matrix refuses it, and `external-api-rfc1918.yaml` is the policy that keeps to it.

use palisade::cli::test as objects;
use palisade::inventory::Inventory;
use palisade::policy::EngineOptions;
use serde_json::{Value, json};

use crate::common::{guides, repo_path};
use crate::matrix::{Design, bundle, check_design, matrix_says, review};

const THREE_TIER: Design = Design {
    guide: &[
        "tests/data/guides/default-deny.yaml",
        "tests/data/guides/allow-dns.yaml",
        "tests/data/guides/three-tier",
    ],
    cluster: "tests/data/netpol/three-tier-cluster.yaml",
    matrix: "three-tier",
};

const NAMESPACE_ISOLATION: Design = Design {
    guide: &["tests/data/guides/namespace-isolation"],
    cluster: "tests/data/netpol/namespace-isolation-cluster.yaml",
    matrix: "namespace-isolation",
};

const DATABASE_ISOLATION: Design = Design {
    guide: &["tests/data/guides/database-isolation"],
    cluster: "tests/data/netpol/database-isolation-cluster.yaml",
    matrix: "database-isolation",
};

/// The external API design as the guide writes it: 0.0.0.0/0 except 169.254.169.254/32.
const EXTERNAL_API_AS_WRITTEN: Design = Design {
    guide: &[
        "tests/data/guides/default-deny.yaml",
        "tests/data/guides/allow-dns.yaml",
        "tests/data/guides/external-api.yaml",
    ],
    cluster: "tests/data/netpol/external-api-cluster.yaml",
    matrix: "external-api",
};

/// The external API design with RFC 1918 excepted too, as its matrix states it.
const EXTERNAL_API: Design = Design {
    guide: &[
        "tests/data/guides/default-deny.yaml",
        "tests/data/guides/allow-dns.yaml",
        "tests/data/guides/external-api-rfc1918.yaml",
    ],
    cluster: "tests/data/netpol/external-api-cluster.yaml",
    matrix: "external-api",
};

/// A NetworkPolicy `name` in `namespace` with `spec`.
fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// The design's policy `name`, as written.
fn guide_policy(design: &Design, name: &str) -> Value {
    design
        .policies()
        .into_iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no policy {name}"))
}

/// What the design's matrix says of `operation` on `object` in the design's cluster (an UPDATE
/// is of the design's policy of the same name).
fn says(design: &Design, operation: &str, object: &Value) -> Vec<String> {
    let bundle = bundle(design.matrix);
    let inventory = Inventory::from_objects(design.objects());
    let old = (operation == "UPDATE")
        .then(|| guide_policy(design, object["metadata"]["name"].as_str().unwrap()));
    matrix_says(
        &bundle,
        &inventory,
        &review(operation, object, old.as_ref()),
    )
}

/// Whether one of `messages` contains every one of `parts`.
fn one_says(messages: &[String], parts: &[&str]) -> bool {
    messages.iter().any(|m| parts.iter().all(|p| m.contains(p)))
}

#[test]
fn the_three_tier_guide_satisfies_its_matrix_and_refuses_every_widening() {
    check_design(&THREE_TIER, &[]);
}

/// The frontend must not skip the backend: a policy that lets it reach the database is refused
/// on the end whose policy opens it, though the other end still blocks the flow.
#[test]
fn three_tier_refuses_the_frontend_reaching_the_database_from_either_end() {
    let database = json!({"matchLabels": {"tier": "database"}});
    let frontend = json!({"matchLabels": {"tier": "frontend"}});
    let port = json!([{"protocol": "TCP", "port": 5432}]);
    let egress = policy(
        "payments",
        "frontend-to-database",
        json!({
            "podSelector": frontend,
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": database}], "ports": port}],
        }),
    );
    let says_egress = says(&THREE_TIER, "CREATE", &egress);
    assert!(
        one_says(
            &says_egress,
            &[
                "the egress of",
                "pods tier=frontend in payments",
                "pods tier=database in payments",
                "TCP 5432",
                "payments/frontend-to-database egress[0]",
                "\"three-tier\"",
            ]
        ),
        "{says_egress:#?}"
    );
    let ingress = policy(
        "payments",
        "database-from-frontend",
        json!({
            "podSelector": database,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": frontend}], "ports": port}],
        }),
    );
    let says_ingress = says(&THREE_TIER, "CREATE", &ingress);
    assert!(
        one_says(
            &says_ingress,
            &[
                "the ingress of",
                "pods tier=frontend in payments",
                "pods tier=database in payments",
                "TCP 5432",
                "payments/database-from-frontend ingress[0]",
            ]
        ),
        "{says_ingress:#?}"
    );
    // The backend reaching the database the same way is the design: not a word.
    let mut same = egress.clone();
    same["metadata"]["name"] = json!("backend-to-database-too");
    same["spec"]["podSelector"] = json!({"matchLabels": {"tier": "backend"}});
    let fine = says(&THREE_TIER, "CREATE", &same);
    assert!(fine.is_empty(), "{fine:#?}");
}

#[test]
fn the_namespace_isolation_guide_satisfies_its_matrix_and_refuses_every_widening() {
    check_design(&NAMESPACE_ISOLATION, &[]);
}

/// Letting another namespace in is refused, whether by its name or by a label another
/// namespace can carry (`name: team-a`, which look-alike has), and so is a namespace taking the
/// label a policy of team-a waits for.
#[test]
fn namespace_isolation_refuses_letting_another_namespace_in() {
    let port = json!([{"protocol": "TCP", "port": 8080}]);
    let team_b = policy(
        "team-a",
        "allow-team-b",
        json!({
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-b"}}}],
                "ports": port,
            }],
        }),
    );
    let got = says(&NAMESPACE_ISOLATION, "CREATE", &team_b);
    assert!(
        one_says(
            &got,
            &[
                "the ingress of",
                "team-b",
                "TCP 8080",
                "team-a/allow-team-b ingress[0]",
                "\"team-a-isolation\"",
            ]
        ),
        "{got:#?}"
    );
    assert!(!got.iter().any(|m| m.contains("look-alike")), "{got:#?}");

    let by_name_label = policy(
        "team-a",
        "allow-own-name",
        json!({
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"name": "team-a"}}}],
                "ports": port,
            }],
        }),
    );
    let got = says(&NAMESPACE_ISOLATION, "CREATE", &by_name_label);
    assert!(
        one_says(
            &got,
            &[
                "the ingress of",
                "look-alike",
                "TCP 8080",
                "team-a/allow-own-name ingress[0]"
            ]
        ),
        "{got:#?}"
    );

    // A policy for namespaces labelled env=trusted opens nothing while none is (and a new
    // namespace gets only the labels the bundle requires): it is judged when team-b takes the
    // label.
    let waiting = policy(
        "team-a",
        "allow-trusted",
        json!({
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"env": "trusted"}}}],
                "ports": port,
            }],
        }),
    );
    let got = says(&NAMESPACE_ISOLATION, "CREATE", &waiting);
    assert!(got.is_empty(), "{got:#?}");
    let mut objects = NAMESPACE_ISOLATION.objects();
    objects.push(waiting);
    let inventory = Inventory::from_objects(objects);
    let namespace = |labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b", "labels": labels}});
    let was = namespace(json!({"kubernetes.io/metadata.name": "team-b"}));
    let now = namespace(json!({"kubernetes.io/metadata.name": "team-b", "env": "trusted"}));
    let got = matrix_says(
        &bundle(NAMESPACE_ISOLATION.matrix),
        &inventory,
        &review("UPDATE", &now, Some(&was)),
    );
    assert!(
        one_says(
            &got,
            &[
                "the ingress of team-a lets every pod in team-b reach every pod in team-a",
                "TCP 8080",
                "team-a/allow-trusted ingress[0]",
            ]
        ),
        "{got:#?}"
    );
}

#[test]
fn the_database_isolation_guide_satisfies_its_matrix_and_refuses_every_widening() {
    check_design(&DATABASE_ISOLATION, &[]);
}

/// Deleting either half of the API's way to PostgreSQL blocks a required flow; deleting the
/// default-deny opens forbidden flows instead.
#[test]
fn database_isolation_refuses_deleting_the_api_s_way_to_postgres() {
    for (name, side) in [
        ("postgres-from-api", "the ingress of"),
        ("api-to-postgres", "the egress of"),
    ] {
        let got = says(
            &DATABASE_ISOLATION,
            "DELETE",
            &guide_policy(&DATABASE_ISOLATION, name),
        );
        assert!(
            one_says(
                &got,
                &[
                    "required flow \"api-to-postgres\" of matrix \"orders-database\" is blocked",
                    "TCP 5432",
                    side,
                ]
            ),
            "{name}: {got:#?}"
        );
        assert!(
            got.iter().all(|m| m.contains("required flow")),
            "{name}: {got:#?}"
        );
    }
    let got = says(
        &DATABASE_ISOLATION,
        "DELETE",
        &guide_policy(&DATABASE_ISOLATION, "default-deny-all"),
    );
    assert!(
        one_says(
            &got,
            &[
                "the ingress of orders lets",
                "no NetworkPolicy of orders isolates its ingress",
            ]
        ),
        "{got:#?}"
    );
    assert!(!got.iter().any(|m| m.contains("required flow")), "{got:#?}");
}

/// Only the API: a policy that lets the worker reach PostgreSQL is refused with the worker named.
#[test]
fn database_isolation_refuses_another_pod_reaching_postgres() {
    let worker = policy(
        "orders",
        "postgres-from-worker",
        json!({
            "podSelector": {"matchLabels": {"app": "postgres"}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"app": "worker"}}}],
                "ports": [{"protocol": "TCP", "port": 5432}],
            }],
        }),
    );
    let got = says(&DATABASE_ISOLATION, "CREATE", &worker);
    assert!(
        one_says(
            &got,
            &[
                "the ingress of",
                "app=worker",
                "pods app=postgres in orders",
                "TCP 5432",
                "orders/postgres-from-worker ingress[0]",
            ]
        ),
        "{got:#?}"
    );
}

/// The guide's external API policy excepts only the metadata address: through 0.0.0.0/0 it
/// reaches the RFC 1918 ranges, which the matrix leaves out. Palisade says so, naming them and
/// the rule, in an audit and at admission.
#[test]
fn the_external_api_guide_as_written_reaches_rfc1918_and_its_matrix_says_so() {
    let found = EXTERNAL_API_AS_WRITTEN.audit();
    let forbidden: Vec<String> = found.forbidden.iter().map(|b| b.message()).collect();
    let blocked: Vec<String> = found.blocked.iter().map(|b| b.message()).collect();
    assert!(blocked.is_empty(), "{blocked:#?}");
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    // One finding per range, each naming the rule that opens it.
    let rfc1918 = |messages: &[String]| {
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
            .iter()
            .all(|range| {
                one_says(
                    messages,
                    &[
                        "the egress of payments lets pods tier=backend in payments",
                        &format!("reach {range} on TCP 443"),
                        "(opened by payments/allow-external-api egress[0])",
                        "communication matrix \"external-api\" has no flow for it",
                    ],
                )
            })
    };
    assert!(rfc1918(&forbidden), "{forbidden:#?}");
    // Only those: not the metadata address, not another port, nothing else of payments.
    assert_eq!(forbidden.len(), 3, "{forbidden:#?}");
    assert!(found.conforming < found.sets);

    // At admission: into payments with only default-deny and DNS, the guide's policy is refused
    // and the corrected one is admitted.
    let bundle = bundle("external-api");
    let written = guide_policy(&EXTERNAL_API_AS_WRITTEN, "allow-external-api");
    let corrected = guide_policy(&EXTERNAL_API, "allow-external-api");
    assert_ne!(written, corrected);
    let others: Vec<Value> = EXTERNAL_API
        .objects()
        .into_iter()
        .filter(|o| o["metadata"]["name"] != "allow-external-api")
        .collect();
    let inventory = Inventory::from_objects(others);
    let got = matrix_says(&bundle, &inventory, &review("CREATE", &written, None));
    assert!(rfc1918(&got), "{got:#?}");
    assert_eq!(got.len(), 3, "{got:#?}");
    let got = matrix_says(&bundle, &inventory, &review("CREATE", &corrected, None));
    assert!(got.is_empty(), "{got:#?}");
}

#[test]
fn the_corrected_external_api_policy_satisfies_its_matrix_and_refuses_every_widening() {
    check_design(&EXTERNAL_API, &[]);
    // The default bundle warns of the guide's policy once per RFC 1918 range, and says nothing
    // of the corrected one.
    let default =
        palisade::bundle::load(&repo_path("policies"), &EngineOptions::default()).unwrap();
    let said = |file: &str| -> Vec<String> {
        objects::check(&default, guides::guide(file), Vec::new())
            .unwrap()
            .into_iter()
            .flat_map(|r| r.violations)
            .map(|v| v.message)
            .collect()
    };
    let written = said("tests/data/guides/external-api.yaml");
    assert_eq!(written.len(), 3, "{written:#?}");
    assert!(
        written.iter().all(|m| m.contains("private range")),
        "{written:#?}"
    );
    let corrected = said("tests/data/guides/external-api-rfc1918.yaml");
    assert!(corrected.is_empty(), "{corrected:#?}");
}

/// Reaching what the design leaves out: putting back the guide's except list (RFC 1918) or
/// opening the metadata address is refused with the range named; the frontend reaching external
/// HTTPS is refused too.
#[test]
fn external_api_refuses_private_ranges_and_other_pods() {
    let mut back = guide_policy(&EXTERNAL_API, "allow-external-api");
    back["spec"]["egress"][0]["to"][0]["ipBlock"]["except"] = json!(["169.254.169.254/32"]);
    let got = says(&EXTERNAL_API, "UPDATE", &back);
    assert!(
        one_says(
            &got,
            &[
                "10.0.0.0/8",
                "TCP 443",
                "payments/allow-external-api egress[0]"
            ]
        ),
        "{got:#?}"
    );

    let metadata = policy(
        "payments",
        "allow-metadata",
        json!({
            "podSelector": {"matchLabels": {"tier": "backend"}},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}],
                "ports": [{"protocol": "TCP", "port": 443}],
            }],
        }),
    );
    let got = says(&EXTERNAL_API, "CREATE", &metadata);
    assert!(
        one_says(
            &got,
            &[
                "169.254.169.254",
                "TCP 443",
                "payments/allow-metadata egress[0]"
            ]
        ),
        "{got:#?}"
    );

    let frontend = policy(
        "payments",
        "frontend-external-api",
        json!({
            "podSelector": {"matchLabels": {"tier": "frontend"}},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{"ipBlock": {"cidr": "8.8.8.0/24"}}],
                "ports": [{"protocol": "TCP", "port": 443}],
            }],
        }),
    );
    let got = says(&EXTERNAL_API, "CREATE", &frontend);
    assert!(
        one_says(
            &got,
            &[
                "pods tier=frontend in payments",
                "8.8.8.0/24",
                "TCP 443",
                "payments/frontend-external-api egress[0]",
            ]
        ),
        "{got:#?}"
    );
}
