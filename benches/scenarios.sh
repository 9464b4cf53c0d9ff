#!/bin/sh
# Issue 14's load scenarios, the way BENCHMARKS.md measures: `palisade serve` pinned to core 0,
# the load generator (benches/load.rs) pinned to core 1, HTTPS with the development CA.
#
#   cargo build --release && cargo build --release --bench load
#   benches/scenarios.sh [--quick] [scenario...]
#
# Scenarios: ratio latency nonmatching fifty mutate memory inventory reload netpol library, and soak (issue 15's
# 30-minute soak, SOAK_MINUTES to change it), which runs only when named. Without names, every
# scenario but soak runs. --quick runs each for a fraction of a second: CI's smoke
# run, which proves the scenarios still work (every review answered, every figure present) and
# measures nothing. Each result line starts with the scenario's name; BENCHMARKS.md records them.
set -eu
cd "$(dirname "$0")/.."

DUR=10s WARM=2s RATE_FIFTY=1000 INVENTORY_NAMESPACES=10000
if [ "${1:-}" = "--quick" ]; then
  DUR=1s WARM=200ms RATE_FIFTY=200
  INVENTORY_NAMESPACES=100
  shift
fi
SCENARIOS=${*:-ratio latency nonmatching fifty mutate memory inventory reload netpol library}

BIN=${PALISADE_BIN:-target/release/palisade}
LOAD=$(ls -t target/release/deps/load-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
if [ ! -x "$BIN" ] || [ -z "$LOAD" ]; then
  echo "build first: cargo build --release && cargo build --release --bench load" >&2
  exit 2
fi
# Two cores: server on one, load on the other. One core: both share it (figures not comparable).
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  PIN_SERVER="taskset -c 0" PIN_LOAD="taskset -c 1"
else
  PIN_SERVER="" PIN_LOAD=""
fi

WORK=$(mktemp -d)
PID=""
stop_server() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
  fi
}
trap 'stop_server; rm -rf "$WORK"' EXIT INT TERM

INV=tests/data/mutation/namespaces.yaml,tests/data/guides/default-deny.yaml
ADMITTED=tests/data/bench/admitted-pod.json
MUTATE_BODY=tests/data/bench/mutate-pod-5-containers.json
SIX=tests/data/bench/library-six
PORT=19443 HEALTH=19080

# The bundles: empty; the default one; the default one plus 100 constraints of kinds that never
# match a Pod; 50 templates matching a Pod, copies of the bundle's three Pod templates under new
# kinds, with a constraint each.
mkdir -p "$WORK/empty" "$WORK/nonmatching" "$WORK/fifty" "$WORK/six"
cp -r policies/. "$WORK/nonmatching/"
cp -r "$SIX/templates" "$SIX/constraints" "$WORK/six/"
python3 - "$WORK" <<'EOF'
import sys, re, pathlib
work = pathlib.Path(sys.argv[1])
labels = pathlib.Path("policies/zero-trust/namespace-labels/constraint.yaml").read_text()
out = []
for i in range(100):
    doc = labels.replace("name: namespace-zero-trust-labels", f"name: unmatched-{i:03d}")
    doc = doc.replace("kinds: [Namespace]", f"kinds: [ConfigMap{i:03d}]")
    out.append(doc)
(work / "nonmatching" / "zero-trust" / "unmatched.yaml").write_text("---\n".join(out))
sources = ["pod-security", "default-deny-required", "mutual-tls"]
for i in range(50):
    src = sources[i % 3]
    d = pathlib.Path("policies/zero-trust") / src
    t = (d / "template.yaml").read_text()
    c = (d / "constraint.yaml").read_text()
    name = re.search(r"^  name: (\S+)", t, re.M).group(1)
    kind = re.search(r"kind: (Palisade\w+)", t).group(1)
    t = t.replace(f"name: {name}", f"name: {name}{i}").replace(f"kind: {kind}", f"kind: {kind}{i}")
    t = t.replace(f"package {name}", f"package {name}{i}")
    c = re.sub(r"^kind: .*$", f"kind: {kind}{i}", c, flags=re.M)
    c = re.sub(r"^  name: (\S+)", rf"  name: \g<1>-{i}", c, count=1, flags=re.M)
    (work / "fifty" / f"t{i:02d}.yaml").write_text(t + "---\n" + c)
EOF

start_server() { # bundle, then extra serve arguments
  serve_bundle=$1
  shift
  $PIN_SERVER "$BIN" serve --log-level info --listen 127.0.0.1:$PORT --health-listen 127.0.0.1:$HEALTH \
    --log-format json --policies "$serve_bundle" --inventory "$INV" "$@" >"$WORK/server.log" 2>&1 &
  PID=$!
  tries=0
  until curl -sf "http://127.0.0.1:$HEALTH/readyz" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ $tries -gt 300 ] || ! kill -0 "$PID" 2>/dev/null; then
      echo "palisade serve did not become ready:" >&2
      cat "$WORK/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

load() { # label, then load generator arguments; prints the result line and checks it
  label=$1
  shift
  line=$($PIN_LOAD "$LOAD" --addr 127.0.0.1:$PORT --duration "$DUR" --warmup "$WARM" \
    --server-pid "$PID" "$@")
  echo "$label $line"
  case "$line" in
  *" errors=0 "*) ;;
  *)
    echo "$label: reviews failed" >&2
    exit 1
    ;;
  esac
  case "$line" in
  *server_cpu_per_review=*) ;;
  *)
    echo "$label: no server figures" >&2
    exit 1
    ;;
  esac
  LAST=$line
}

field() { # name, line: the number after name=
  echo "$2" | tr ' ' '\n' | sed -n "s/^$1=\([0-9.]*\).*/\1/p"
}

rss_mib() {
  awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$PID/status"
}

MAX_DEFAULT=""
for scenario in $SCENARIOS; do
  case $scenario in
  ratio)
    for bundle in empty default; do
      [ "$bundle" = empty ] && dir="$WORK/empty" || dir=policies
      start_server "$dir"
      load "ratio $bundle h2" --body "$ADMITTED" --concurrency 32
      [ "$bundle" = default ] && MAX_DEFAULT=$(field throughput "$LAST")
      load "ratio $bundle http1" --body "$ADMITTED" --concurrency 32 --proto http1
      stop_server
    done
    ;;
  latency)
    # At half of the default bundle's closed-loop maximum (measured by `ratio` in this run).
    if [ -z "$MAX_DEFAULT" ]; then
      start_server policies
      load "latency max" --body "$ADMITTED" --concurrency 32
      MAX_DEFAULT=$(field throughput "$LAST")
      stop_server
    fi
    rate=$(echo "$MAX_DEFAULT" | awk '{printf "%d", $1 / 2}')
    for bundle in empty default; do
      [ "$bundle" = empty ] && dir="$WORK/empty" || dir=policies
      start_server "$dir"
      load "latency $bundle rate=$rate" --body "$ADMITTED" --rate "$rate"
      stop_server
    done
    ;;
  nonmatching)
    start_server "$WORK/nonmatching"
    load "nonmatching +100 constraints h2" --body "$ADMITTED" --concurrency 32
    stop_server
    ;;
  fifty)
    start_server "$WORK/fifty"
    load "fifty templates rate=$RATE_FIFTY" --body "$ADMITTED" --rate "$RATE_FIFTY"
    stop_server
    ;;
  mutate)
    start_server policies
    load "mutate 5 containers h2" --body "$MUTATE_BODY" --path "/mutate?timeout=5s" --concurrency 32
    stop_server
    ;;
  memory)
    for bundle in empty default; do
      [ "$bundle" = empty ] && dir="$WORK/empty" || dir=policies
      start_server "$dir"
      sleep 1
      echo "memory $bundle idle_rss=$(rss_mib)MiB"
      stop_server
    done
    ;;
  inventory)
    # Inventory files of $INVENTORY_NAMESPACES namespaces, each with a default-deny and an allow
    # NetworkPolicy, as the API server returns them (uid, resourceVersion, timestamps): the
    # process's RSS once loaded, and reviews against it.
    python3 - "$WORK/inventory.json" "$INVENTORY_NAMESPACES" <<'EOF'
import sys, json
path, n = sys.argv[1], int(sys.argv[2])
items = []
def meta(ns_index, name, extra):
    m = {"name": name, "uid": f"6f0c8a52-{ns_index:04x}-4c1e-9a43-{len(items):012x}",
         "resourceVersion": str(100000 + len(items)), "creationTimestamp": "2026-11-22T10:00:00Z"}
    m.update(extra)
    return m
for i in range(n):
    ns = f"ns-{i:05d}"
    items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(i, ns, {"labels": {
        "kubernetes.io/metadata.name": ns, "security-level": "medium", "network-policy": "zero-trust"}}),
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    items.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": meta(i, "default-deny", {"namespace": ns, "generation": 1}),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})
    items.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": meta(i, "allow-web", {"namespace": ns, "generation": 1}),
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"ports": [{"protocol": "TCP", "port": 8080}]}]}})
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(path, "w"))
EOF
    INV_SAVED=$INV
    INV="$INV,$WORK/inventory.json"
    start_server policies
    sleep 1
    echo "inventory objects=$((3 * INVENTORY_NAMESPACES)) rss=$(rss_mib)MiB peak=$(awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$PID/status")MiB"
    load "inventory reviews h2" --body "$ADMITTED" --concurrency 32
    stop_server
    INV=$INV_SAVED
    ;;
  reload)
    # The 50-template bundle rewritten every second under load, at half the rate of `fifty`:
    # every rewrite is a reload, which compiles the 50 templates on a background thread at a
    # lower priority. Compared with the same load without reloads, in the same run.
    rate=$((RATE_FIFTY / 2))
    cp -r "$WORK/fifty" "$WORK/reloading"
    start_server "$WORK/reloading" --policy-poll-interval 200ms
    load "reload none, fifty templates rate=$rate" --body "$ADMITTED" --rate "$rate"
    (
      i=0
      while kill -0 "$PID" 2>/dev/null; do
        i=$((i + 1))
        echo "# rewrite $i" >>"$WORK/reloading/t01.yaml"
        sleep 1
      done
    ) &
    toggler=$!
    load "reload every 1s, fifty templates rate=$rate" --body "$ADMITTED" --rate "$rate"
    kill $toggler 2>/dev/null || true
    # A short (--quick) load can end before the first reload's compilation does: wait for it,
    # up to 20 s, rather than count a reload still in flight as a failure.
    tries=0
    until grep -q "policy bundle re" "$WORK/server.log" || [ $tries -ge 200 ]; do
      tries=$((tries + 1))
      sleep 0.1
    done
    reloads=$(grep -c "policy bundle reloaded" "$WORK/server.log" || true)
    slowest=$(grep "policy bundle reloaded" "$WORK/server.log" | sed -n 's/.*"seconds":\([0-9.e-]*\).*/\1/p' | sort -g | tail -1)
    rejected=$(grep -c "policy bundle rejected" "$WORK/server.log" || true)
    echo "reload reloads=$reloads rejected=$rejected slowest=${slowest:-none}s"
    stop_server
    if [ "$reloads" -eq 0 ] || [ "$rejected" -ne 0 ]; then
      echo "reload: the bundle was not reloaded cleanly" >&2
      cat "$WORK/server.log" >&2
      exit 1
    fi
    ;;
  netpol)
    # Issue 27: one tenant floods the webhook with large NetworkPolicies (a namespace of 100
    # policies of 64 ipBlocks with 8 excepts each, and more of them under review), while Pod
    # reviews of other tenants arrive at a fixed rate. NetworkPolicy reviews are judged on
    # their own threads: the Pods' latency during the flood is compared with the same rate
    # alone, in the same run.
    python3 - "$WORK" <<'EOF'
import sys, json, pathlib
work = pathlib.Path(sys.argv[1])
def policy(name, i):
    peers = [{"ipBlock": {"cidr": f"10.{i % 250}.{p}.0/24",
                          "except": [f"10.{i % 250}.{p}.{16 * e}/28" for e in range(8)]}} for p in range(64)]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "tenant"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": peers, "ports": [{"protocol": "TCP", "port": 443}]}]}}
items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant", "labels": {
    "kubernetes.io/metadata.name": "tenant", "security-level": "low", "network-policy": "zero-trust"}}}]
items += [policy(f"big-{i:03d}", i) for i in range(100)]
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, open(work / "tenant.json", "w"))
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "flood", "operation": "CREATE", "namespace": "tenant", "name": "big-new",
    "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
    "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
    "userInfo": {"username": "tenant"}, "object": policy("big-new", 200)}}
json.dump(review, open(work / "flood-review.json", "w"))
EOF
    INV_SAVED=$INV
    INV="$INV,$WORK/tenant.json"
    start_server policies
    rate=$RATE_FIFTY
    load "netpol pods alone rate=$rate" --body "$ADMITTED" --rate "$rate"
    $PIN_LOAD "$LOAD" --addr 127.0.0.1:$PORT --duration "$DUR" --warmup "$WARM" \
      --body "$WORK/flood-review.json" --concurrency 8 --connections 2 >"$WORK/flood.out" &
    flood=$!
    load "netpol pods during the flood rate=$rate" --body "$ADMITTED" --rate "$rate"
    wait $flood
    echo "netpol flood of NetworkPolicy reviews $(cat "$WORK/flood.out")"
    case "$(cat "$WORK/flood.out")" in
    *" errors=0 "*) ;;
    *)
      echo "netpol: the flood's reviews failed" >&2
      exit 1
      ;;
    esac
    stop_server
    INV=$INV_SAVED
    ;;
  library)
    # Issue 33: the six gatekeeper-library constraints (Palisade's own templates of their kinds,
    # tests/data/bench/library-six), the case Gatekeeper is compared on, with the empty and the
    # default bundle in the same run for the ratios: HTTP/1.1, 32 connections, each with one
    # review in flight, the six's admitted Pod (which all three bundles admit).
    for bundle in empty default six; do
      case $bundle in
      empty) dir="$WORK/empty" ;;
      default) dir=policies ;;
      six) dir="$WORK/six" ;;
      esac
      start_server "$dir"
      answer=$(curl -sf --cacert certs/ca.crt "https://localhost:$PORT/validate?timeout=5s" \
        -H 'Content-Type: application/json' -d @"$SIX/admitted-pod.json")
      case "$answer" in
      *'"allowed":true'*) ;;
      *)
        echo "library: the $bundle bundle did not admit the Pod: $answer" >&2
        exit 1
        ;;
      esac
      if [ "$bundle" = six ]; then
        # The six are loaded and judge: each denies the denied Pod.
        answer=$(curl -sf --cacert certs/ca.crt "https://localhost:$PORT/validate?timeout=5s" \
          -H 'Content-Type: application/json' -d @"$SIX/denied-pod.json")
        for name in all-must-have-owner psp-pods-allowed-user-ranges psp-seccomp \
          psp-capabilities-restricted psp-allow-privilege-escalation-container psp-privileged-container; do
          case "$answer" in
          *'"allowed":false'*"[$name]"*) ;;
          *)
            echo "library: $name did not deny the denied Pod: $answer" >&2
            exit 1
            ;;
          esac
        done
      fi
      load "library $bundle http1" --body "$SIX/admitted-pod.json" --concurrency 32 --proto http1
      stop_server
    done
    ;;
  soak)
    # Issue 15's soak, run only when named: SOAK_MINUTES (30) one-minute windows back to back at
    # half the default bundle's closed-loop maximum, each line with the window's latencies and
    # errors and the server's RSS, open files and threads afterwards. The figures should be flat.
    start_server policies
    load "soak max" --body "$ADMITTED" --concurrency 32
    rate=$(field throughput "$LAST" | awk '{printf "%d", $1 / 2}')
    minutes=${SOAK_MINUTES:-30}
    window=60s
    [ "$DUR" = 1s ] && window=1s
    i=1
    while [ "$i" -le "$minutes" ]; do
      line=$($PIN_LOAD "$LOAD" --addr 127.0.0.1:$PORT --duration "$window" --warmup 0s \
        --server-pid "$PID" --body "$ADMITTED" --rate "$rate")
      fds=$(ls "/proc/$PID/fd" | wc -l)
      threads=$(awk '/^Threads:/ {print $2}' "/proc/$PID/status")
      echo "soak minute=$i rate=$rate fds=$fds threads=$threads $line"
      case "$line" in
      *" errors=0 "*) ;;
      *)
        echo "soak: reviews failed in minute $i" >&2
        exit 1
        ;;
      esac
      i=$((i + 1))
    done
    stop_server
    ;;
  *)
    echo "unknown scenario $scenario" >&2
    exit 2
    ;;
  esac
done
