#!/usr/bin/env python3
"""The CEL and the Rego of the gatekeeper-library's dual templates, side by side (BENCHMARKS.md,
"CEL and Rego of the library's dual templates").

Usage: benches/cel_vs_rego.py <gatekeeper-library/library> [rounds]

For each template that ships both engines: its suite's first test (template, constraint, case
objects) through `palisade bench`, each constraint alone, one thread pinned to core 1, the
engines alternating per round. Needs a release build (`cargo build --release`) and PyYAML.
Prints a Markdown table row per template: CEL means, Rego means (and the Rego engine), ratio.
"""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "palisade")


def micros(go_duration):
    """A duration as Go (and `palisade bench -o json`) writes it, e.g. 12.5µs, in µs."""
    scale = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6, "m": 6e7, "h": 3.6e9}
    return sum(float(n) * scale[u] for n, u in re.findall(r"([0-9.]+)(ns|µs|us|ms|s|m|h)", go_duration))


def main():
    library = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    templates = subprocess.run(
        ["grep", "-rl", "K8sNativeValidation", library, "--include=template.yaml"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    for template in sorted(templates):
        folder = os.path.dirname(template)
        test = yaml.safe_load(open(os.path.join(folder, "suite.yaml")))["tests"][0]
        files = [test["template"], test["constraint"]] + [c["object"] for c in test["cases"]]
        args = [a for f in files for a in ("-f", os.path.join(folder, f))]
        means = {"cel": [], "rego": []}
        engine = ""
        for _ in range(rounds):
            for prefer in ("cel", "rego"):
                out = subprocess.run(
                    ["taskset", "-c", "1", BIN, "bench", *args, "-n", "2000", "--warmup", "200",
                     "--concurrency", "1", "--engine", prefer, "-o", "json"],
                    capture_output=True, text=True, check=True,
                ).stdout
                cost = json.loads(out)[0]["constraints"][0]
                means[prefer].append(micros(cost["latencies"]["mean"]))
                if prefer == "rego":
                    engine = cost["engine"]
        ratio = (sum(means["cel"]) / rounds) / (sum(means["rego"]) / rounds)
        cel = " · ".join(f"{m:.1f}" for m in means["cel"])
        rego = " · ".join(f"{m:.1f}" for m in means["rego"])
        print(f"| {os.path.basename(folder)} | {cel} µs | {rego} µs ({engine}) | {ratio:.2f}× |",
              flush=True)


if __name__ == "__main__":
    main()
