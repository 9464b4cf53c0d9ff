#!/usr/bin/env python3
"""Writes the hand-made seeds of the fuzz corpora (fuzz/corpus/<target>/seed-*), from the
repository's real reviews, bundled policies and test objects. The fuzzer adds its own finds
beside them; both are kept. Run from the repository root: python3 fuzz/seeds/make.py"""
import glob, hashlib, json, os, pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


# review: the reviews captured from a kube-apiserver, and a few broken ones.
for f in sorted(glob.glob(str(ROOT / "tests/data/admission/*.json"))):
    put("review", pathlib.Path(f).read_bytes())
    put("review", pathlib.Path(f).read_bytes()[:200])
put("review", '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":"x"}}')
put("review", '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}')
put("review", "[" * 200)

# review_variant: edit scripts (seed index, then op/depth/picks...).
for seed in range(16):
    for ops in ([], [0, 2, 3, 1], [4, 3, 0, 0, 5], [8, 0, 1, 2], [9, 1, 20, 7], [6, 4, 2, 2, 1, 9], [3, 2, 1, 0], [7, 1, 0, 19, 3]):
        put("review_variant", bytes([seed] + ops))

# mutation: every location of the bundled and test mutators, with each kind.
locations = set()
for f in glob.glob(str(ROOT / "policies/**/*.yaml"), recursive=True) + glob.glob(str(ROOT / "tests/data/mutation/*.yaml")):
    for line in open(f):
        line = line.strip().lstrip("#").strip()
        if line.startswith("location:"):
            locations.add(line.split(":", 1)[1].strip().strip("'\""))
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n", "labels": {"a": "b"}},
       "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}],
                "initContainers": [{"name": "i"}]}}
for loc in sorted(locations):
    put("mutation", f"{loc}\nAssign\n{json.dumps({'assign': {'value': True}})}\n{json.dumps(pod)}")
    put("mutation", f"{loc}\nModifySet\n{json.dumps({'operation': 'merge', 'values': {'fromList': ['ALL']}})}\n{json.dumps(pod)}")
put("mutation", f"metadata.labels.mtls\nAssignMetadata\n{json.dumps({'assign': {'value': 'strict'}})}\n{json.dumps(pod)}")
put("mutation", f'metadata.annotations."a/b"\nAssignMetadata\n{json.dumps({"assign": {"value": "x"}})}\n{json.dumps(pod)}')
put("mutation", f'spec.containers[name: c].ports[containerPort: 80].protocol\nAssign\n{json.dumps({"assign": {"value": "TCP"}, "pathTests": [{"subPath": "spec.containers[name: c]", "condition": "MustExist"}]})}\n{json.dumps(pod)}')
put("mutation", f'spec.containers[name: "*"].x\nAssign\n{json.dumps({"assign": {"value": {"a": [1]}}})}\n{json.dumps(pod)}')

# bundle: the bundled policies and the test templates, file by file.
for f in sorted(glob.glob(str(ROOT / "policies/**/*.yaml"), recursive=True) + glob.glob(str(ROOT / "tests/data/gatekeeper/**/*.yaml"), recursive=True)):
    data = pathlib.Path(f).read_bytes()
    if len(data) <= 64 * 1024:
        put("bundle", data)

# matching: globs, then a match block, a selector, an object and its namespace.
doc = """match:
  kinds: [{apiGroups: [""], kinds: [Pod]}]
  namespaces: ["team-*"]
  excludedNamespaces: ["kube-*", "*-system"]
  labelSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}
  namespaceSelector: {matchLabels: {env: prod}}
  scope: Namespaced
selector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: DoesNotExist}]}
object: {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: team-a, labels: {app: web}}}
namespace: {apiVersion: v1, kind: Namespace, metadata: {name: team-a, labels: {env: prod}}}
"""
for pattern, name in [("kube-*", "kube-system"), ("*-system", "kube-system"), ("*", ""), ("*a*", "bab"), ("**", "x"), ("exact", "exact"), ("*", "*")]:
    put("matching", f"{pattern}\n{name}\n{doc}")
