//! The `palisade` binary as an operator runs it: first start on a fresh checkout, SIGTERM while a
//! review is in flight, certificate generation and start-up errors.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

struct Running {
    child: Child,
    https: std::net::SocketAddr,
    health: std::net::SocketAddr,
    logs: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Starts `palisade serve` in `cwd` on ephemeral ports and waits for its "listening" log line.
async fn spawn_serve(cwd: &Path, extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .current_dir(cwd)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json"])
        .args(if extra.contains(&"--policies") {
            vec![]
        } else {
            vec![
                "--policies",
                concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
            ]
        })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, mut logs) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = logs.recv().await {
            let json: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if json["message"] == "listening" {
                return json;
            }
        }
        panic!("palisade exited before listening");
    })
    .await
    .expect("palisade did not start listening");
    Running {
        child,
        https: listening["https"].as_str().unwrap().parse().unwrap(),
        health: listening["health"].as_str().unwrap().parse().unwrap(),
        logs,
    }
}

fn sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn first_start_generates_dev_certs_and_sigterm_drains_then_exits_zero() {
    install_crypto();
    let cwd = tempfile::tempdir().unwrap();
    let mut running = spawn_serve(cwd.path(), &["--log-level", "debug"]).await;
    for file in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(
            cwd.path().join("certs").join(file).exists(),
            "certs/{file} not generated"
        );
    }
    let ca = std::fs::read(cwd.path().join("certs/ca.crt")).unwrap();
    let client = Client::new(running.https, &[&ca]);
    let body = fixture("admission/validate-create-deployment.json");
    let rsp = client.review(Proto::Http2, "/validate", &body).await;
    assert_eq!(rsp["allowed"], false, "{rsp}");

    // At debug level, one line per review with what it was about and the decision.
    let review_line = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let line = running.logs.recv().await.unwrap();
            if line.contains("\"message\":\"review\"") {
                return serde_json::from_str::<serde_json::Value>(&line).unwrap();
            }
        }
    })
    .await
    .expect("no review log line");
    assert_eq!(review_line["kind"], "Deployment");
    assert_eq!(review_line["namespace"], "payments");
    assert_eq!(review_line["name"], "api");
    assert_eq!(review_line["operation"], "CREATE");
    // The bundled zero-trust policies are live: this Deployment has no limits and its namespace
    // no default-deny NetworkPolicy.
    assert_eq!(review_line["decision"], "denied");
    assert!(review_line["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(review_line["latency_us"].is_u64());

    // A slow review is in flight when SIGTERM arrives.
    let slow = start_slow_review(&client, &body, 64).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&running.child);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, text) = http_get(running.health, "/readyz").await;
    assert_eq!((status, text.as_str()), (503, "not ready: shutting down\n"));
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "exited with a review in flight"
    );

    let (status, text) = finish_slow_review(slow, &body[64..]).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"allowed\":false"), "{text}");

    let exit = tokio::time::timeout(Duration::from_secs(10), running.child.wait())
        .await
        .expect("palisade did not exit after draining")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn certs_generate_writes_a_ca_prints_its_bundle_and_refuses_to_replace_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = || {
        std::process::Command::new(BIN)
            .args([
                "certs",
                "generate",
                "--service",
                "webhook",
                "--namespace",
                "zt",
            ])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    let printed = String::from_utf8(first.stdout).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(printed.trim())
        .unwrap();
    assert_eq!(decoded, ca, "the printed caBundle must be the CA");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("webhook.zt.svc.cluster.local"), "{stderr}");

    let second = run();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("ca.crt") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(out.join("ca.crt")).unwrap(),
        ca,
        "CA replaced"
    );

    // The pair serves: a server on it is trusted by the printed CA.
    install_crypto();
    let server_dir = tempfile::tempdir().unwrap();
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::copy(out.join(f), server_dir.path().join(f)).unwrap();
    }
    let server = TestServer::start_in(server_dir, &["--no-dev-certs"]).await;
    let client = Client::new(server.https, &[&decoded]);
    client
        .review(
            Proto::Http1,
            "/validate",
            &fixture("admission/validate-create-namespace.json"),
        )
        .await;
}

#[tokio::test]
async fn serve_refuses_bad_start_up_input_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/tls.crt"), "garbage").unwrap();
    std::fs::write(dir.path().join("certs/tls.key"), "garbage").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .current_dir(dir.path())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--health-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "started on bad input {args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&[]);
    assert!(
        err.contains("certs/tls.crt") && err.contains("no PEM certificate"),
        "{err}"
    );
    let err = run(&["--tls-key", "certs/missing.key", "--no-dev-certs"]);
    assert!(err.contains("certs/missing.key"), "{err}");
    let err = run(&["--log-level", "palisade=loud"]);
    assert!(err.contains("--log-level"), "{err}");
    let err = run(&["--idle-timeout", "3s", "--request-timeout", "4s"]);
    assert!(
        err.contains(
            "--idle-timeout 3s is shorter than --header-timeout plus --request-timeout (9s)"
        ),
        "{err}"
    );
    let err = run(&["--memory-limit", "lots"]);
    assert!(
        err.contains("--memory-limit") && err.contains("128Mi"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("certs/tls.key")).unwrap();
    let err = run(&[]);
    assert!(err.contains("its key certs/tls.key does not"), "{err}");
}

/// Text logs written to a pipe, as to a file, carry no colour codes, and each record is one
/// line. A template that calls net.cidr_intersects, which regorus' VM cannot call, starts with
/// nothing alarming at info, and says why it runs on the interpreter in one line at debug.
#[tokio::test]
async fn text_logs_to_a_pipe_are_plain_records_of_one_line() {
    let cwd = tempfile::tempdir().unwrap();
    let policies = cwd.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for file in ["cidr.yaml", "cidr-constraint.yaml"] {
        std::fs::copy(
            repo_path(&format!("tests/data/gatekeeper/opa-parity/{file}")),
            policies.join(file),
        )
        .unwrap();
    }
    for level in ["info", "debug"] {
        let mut child = Command::new(BIN)
            .current_dir(cwd.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--health-listen", "127.0.0.1:0", "--no-cluster"])
            .args(["--policies", "policies", "--log-level", level])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = Vec::new();
        let listening = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let listening = line.contains(" listening ");
                log.push(line);
                if listening {
                    return true;
                }
            }
            false
        })
        .await
        .expect("palisade did not start listening");
        assert!(listening, "palisade exited:\n{}", log.join("\n"));
        assert!(
            !log.concat().contains('\x1b'),
            "colour codes in a piped log:\n{}",
            log.join("\n")
        );
        // Ready: the start-up is over. Killed rather than stopped: what is checked is the
        // start-up's log.
        let health: std::net::SocketAddr = log
            .last()
            .and_then(|l| l.split("health=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        let ready = eventually(Duration::from_secs(10), || async {
            http_get(health, "/readyz").await.0 == 200
        })
        .await;
        assert!(ready, "{}", log.join("\n"));
        child.kill().await.unwrap();
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push(line);
        }
        let text = log.join("\n");
        assert!(
            !text.contains('\x1b'),
            "colour codes in a piped log:\n{text}"
        );
        for line in &log {
            let mut words = line.split_whitespace();
            let stamp = words.next().unwrap_or_default();
            let severity = words.next().unwrap_or_default();
            assert!(
                time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                    .is_ok()
                    && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&severity),
                "not a record of its own, or a record continued on this line: {line:?}\n{text}"
            );
        }
        assert!(!text.contains("Unknown function"), "{text}");
        if level == "debug" {
            assert!(
                log.iter().any(|l| l.contains("DEBUG")
                    && l.contains("template=k8sprivateegress")
                    && l.contains("builtins=net.cidr_intersects")
                    && l.contains("regorus' VM cannot call")),
                "{text}"
            );
        }
    }
}

/// The log lines an incident review and a rollout rely on: a break-glass use at warn level with
/// who, why and what it bypassed; a dryrun violation at info level. A broken configuration file
/// stops the start with the file and the field.
#[tokio::test]
async fn break_glass_and_dryrun_leave_structured_log_lines() {
    install_crypto();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("config.yaml"),
        "namespaces:\n  - names: [shop]\n    enforcement: dryrun\nbreakGlass:\n  users: [alice]\n",
    )
    .unwrap();
    let mut running = spawn_serve(cwd.path(), &["--config", "config.yaml"]).await;
    let ca = std::fs::read(cwd.path().join("certs/ca.crt")).unwrap();
    let client = Client::new(running.https, &[&ca]);
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = edited_review("validate-create-deployment.json", |v| {
        v["request"]["userInfo"] = serde_json::json!({"username": "alice", "groups": ["oncall"]});
        v["request"]["object"]["spec"]["template"]["metadata"]["annotations"] = serde_json::json!({
            "palisade.dev/break-glass": "INC-77", "palisade.dev/break-glass-expires": expires});
    });
    let rsp = client.review(Proto::Http2, "/validate", &body).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");
    let dryrun = edited_review("validate-create-deployment.json", |v| {
        in_namespace(v, "shop")
    });
    let rsp = client.review(Proto::Http2, "/validate", &dryrun).await;
    assert_eq!(rsp["allowed"], true, "{rsp}");

    let mut seen = (None, None);
    tokio::time::timeout(Duration::from_secs(5), async {
        while seen.0.is_none() || seen.1.is_none() {
            let line = running.logs.recv().await.unwrap();
            let json: serde_json::Value = serde_json::from_str(&line).unwrap();
            if json["message"] == "break-glass used: admitted despite deny violations" {
                seen.0 = Some(json);
            } else if json["message"] == "dryrun violation (not enforced)" {
                seen.1 = Some(json);
            }
        }
    })
    .await
    .expect("no break-glass or dryrun log line");
    let (used, dryrun) = (seen.0.unwrap(), seen.1.unwrap());
    assert_eq!(used["level"], "WARN");
    assert_eq!(used["user"], "alice");
    assert_eq!(used["reason"], "INC-77");
    assert_eq!(used["expires"], expires);
    assert_eq!(used["kind"], "Deployment");
    assert!(
        used["constraints"]
            .as_str()
            .unwrap()
            .contains("workloads-need-default-deny"),
        "{used}"
    );
    assert_eq!(dryrun["level"], "INFO");
    assert_eq!(dryrun["namespace"], "shop");
    assert!(
        dryrun["violation"].as_str().is_some_and(|m| !m.is_empty()),
        "{dryrun}"
    );

    std::fs::write(
        cwd.path().join("bad.yaml"),
        "breakGlass:\n  maxTTL: 3 fortnights and a bit\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(cwd.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
            "--config",
            "bad.yaml",
        ])
        .args([
            "--policies",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: breakGlass.maxTTL: ") && err.contains("like 90s, 15m or 24h"),
        "{err}"
    );
}

/// The highest resident set size of a process so far, in MiB.
fn peak_rss_mib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id().unwrap())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test]
async fn a_runaway_policy_is_stopped_at_the_memory_ceiling_and_other_reviews_flow() {
    install_crypto();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("hog.yaml"), crate::common::templates::HOG).unwrap();
    // The interpreter has no per-evaluation budget: the process-wide ceiling stops it.
    let mut running = spawn_serve(
        cwd.path(),
        &[
            "--policies",
            "hog.yaml",
            "--engine",
            "interpreter",
            "--memory-limit",
            "64Mi",
            "--eval-timeout",
            "60s",
            "--request-timeout",
            "60s",
        ],
    )
    .await;
    let ca = std::fs::read(cwd.path().join("certs/ca.crt")).unwrap();
    let client = Client::new(running.https, &[&ca]);
    let hog = edited_review("validate-create-pod.json", |v| {
        v["request"]["object"]["spec"]["n"] = serde_json::json!(100_000);
    });
    let plain = fixture("admission/validate-create-pod.json");
    let (rsp, other) = tokio::join!(
        client.review(Proto::Http2, "/validate", &hog),
        client.review(Proto::Http1, "/validate", &plain),
    );
    assert_eq!(other["allowed"], true, "{other}");
    assert_eq!(rsp["allowed"], false, "{rsp}");
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("[hog] policy evaluation failed: stopped at Palisade's memory ceiling")
            && message.contains("(--memory-limit)"),
        "{message}"
    );
    // What the runaway held is given back: the next reviews are judged normally.
    for proto in [Proto::Http1, Proto::Http2] {
        let rsp = client.review(proto, "/validate", &plain).await;
        assert_eq!(rsp["allowed"], true, "{rsp}");
    }
    let peak = peak_rss_mib(&running.child);
    assert!(peak < 256, "peak RSS {peak} MiB with a 64 MiB ceiling");
    let metrics = http_get(running.health, "/metrics").await.1;
    assert_eq!(
        metric(
            &metrics,
            "palisade_evaluation_failures_total{kind=\"memory\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    sigterm(&running.child);
    running.child.wait().await.unwrap();
    let _ = running.logs.try_recv();
}

#[tokio::test]
async fn nothing_secret_reaches_the_logs_or_error_responses() {
    install_crypto();
    let cwd = tempfile::tempdir().unwrap();
    // Dryrun in "shop", so that violations there are logged with their messages.
    std::fs::write(
        cwd.path().join("config.yaml"),
        "namespaces:\n  - names: [shop]\n    enforcement: dryrun\n",
    )
    .unwrap();
    // The bundle, and a template that matches Secrets (one whose message quotes the data
    // would leak it by its author's choice; this one names the object).
    std::fs::create_dir(cwd.path().join("policies")).unwrap();
    std::os::unix::fs::symlink(
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies/zero-trust"),
        cwd.path().join("policies/zero-trust"),
    )
    .unwrap();
    std::fs::write(
        cwd.path().join("policies/secret-owner.yaml"),
        "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {name: k8ssecretowner}\nspec:\n  crd: {spec: {names: {kind: K8sSecretOwner}}}\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n        package k8ssecretowner\n        violation[{\"msg\": msg}] {\n          not input.review.object.metadata.labels.owner\n          msg := sprintf(\"Secret %v has no owner label\", [input.review.object.metadata.name])\n        }\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sSecretOwner\nmetadata: {name: secret-owner}\nspec:\n  match:\n    kinds: [{apiGroups: [\"\"], kinds: [Secret]}]\n",
    )
    .unwrap();
    let mut running = spawn_serve(
        cwd.path(),
        &[
            "--policies",
            "policies",
            "--config",
            "config.yaml",
            "--log-level",
            "trace",
        ],
    )
    .await;
    let ca = std::fs::read(cwd.path().join("certs/ca.crt")).unwrap();
    let client = Client::new(running.https, &[&ca]);
    const PLAIN: &str = "hunter2-s3cr3t-value";
    let encoded = base64::engine::general_purpose::STANDARD.encode(PLAIN);
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration":
                format!("{{\"stringData\":{{\"password\":\"{PLAIN}\"}}}}")}},
        "type": "Opaque",
        "data": {"password": encoded},
        "stringData": {"password": PLAIN},
    });
    let review = |edit: &dyn Fn(&mut serde_json::Value)| {
        edited_review("validate-create-pod.json", |v| {
            in_namespace(v, "shop");
            v["request"]["kind"] =
                serde_json::json!({"group": "", "version": "v1", "kind": "Secret"});
            v["request"]["resource"] =
                serde_json::json!({"group": "", "version": "v1", "resource": "secrets"});
            v["request"]["name"] = serde_json::json!("db");
            v["request"]["object"] = secret.clone();
            edit(v);
        })
    };
    let mut bodies = Vec::new();
    for path in ["/validate", "/mutate"] {
        for proto in [Proto::Http1, Proto::Http2] {
            let rsp = client.post(proto, path, review(&|_| {})).await.unwrap();
            assert_eq!(rsp.status, 200);
            bodies.push(rsp.body);
            // Broken reviews carrying the secret: a wrong type, a truncated body, an UPDATE
            // whose old object is not an object.
            let broken = [
                review(&|v| v["request"]["uid"] = serde_json::json!(42)),
                review(&|_| {})[..600].to_vec(),
                review(&|v| {
                    v["request"]["operation"] = serde_json::json!("UPDATE");
                    v["request"]["oldObject"] = serde_json::json!(PLAIN);
                }),
                review(&|v| v["request"]["dryRun"] = serde_json::json!(PLAIN)),
            ];
            for body in broken {
                let rsp = client.post(proto, path, body).await.unwrap();
                assert_eq!(rsp.status, 400, "{}", String::from_utf8_lossy(&rsp.body));
                bodies.push(rsp.body);
            }
        }
    }
    sigterm(&running.child);
    running.child.wait().await.unwrap();
    let mut logs = Vec::new();
    while let Some(line) = running.logs.recv().await {
        logs.push(line);
    }
    assert!(
        logs.iter().any(|l| l.contains("dryrun violation")),
        "the Secret was not evaluated: no dryrun violation was logged"
    );
    let key = std::fs::read_to_string(cwd.path().join("certs/tls.key")).unwrap();
    let key_lines: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    assert!(!key_lines.is_empty());
    for line in &logs {
        for leak in [PLAIN, encoded.as_str(), "PRIVATE KEY"] {
            assert!(!line.contains(leak), "{leak:?} in a log line: {line}");
        }
        for k in &key_lines {
            assert!(!line.contains(k), "key material in a log line: {line}");
        }
    }
    for body in &bodies {
        let text = String::from_utf8_lossy(body);
        for leak in [PLAIN, encoded.as_str()] {
            assert!(!text.contains(leak), "{leak:?} in an answer: {text}");
        }
        // No internal detail: no source paths, panics or Rust type names.
        for internal in [".rs:", "panicked", "palisade::", "serde_json::"] {
            assert!(
                !text.contains(internal),
                "{internal:?} in an answer: {text}"
            );
        }
    }
}
