#!/usr/bin/env python3
"""The OPA side of the differential test (tests/it/differential.rs): real OPA v1.20, embedded by
PyPI's opa-golib-python-bindings, answering one JSON request per line on stdin with one JSON line
on stdout.

  {"op": "load", "modules": {"name.rego": "source", ...}, "data": {...}}
      -> {"ok": true} | {"error": "..."}          (a new engine: the modules and data.inventory)
  {"op": "eval", "path": "pkg.violation", "inputs": ["input as JSON text", ...]}
      -> {"results": [{"value": [...]} | {"undefined": true} | {"error": "..."}, ...]}

Install OPA as tests/differential/install-opa does (the wheel says Python 3.14; it runs on 3.11).
"""

import ipaddress
import json
import sys

try:
    import opa_bindings.engine
    from opa_bindings import OpaEngine, OpaError, OpaUndefinedError
except ImportError as e:  # pragma: no cover - reported to the Rust side as a clear error
    print(json.dumps({"error": f"OPA is not installed ({e}): run tests/differential/install-opa"}), flush=True)
    sys.exit(3)


# An input arrives as the JSON text the API server would send and goes to OPA as it is: OPA keeps
# a number's text and prints it back in messages, so a round trip through Python's json (which
# writes 0.00001 as 1e-05) would change what OPA answers. `_encode_input` is the bindings' own
# (0.4.4, pinned by install-opa); an input given as bytes passes through it untouched.
_encode_input = opa_bindings.engine._encode_input
opa_bindings.engine._encode_input = lambda value: value if isinstance(value, bytes) else _encode_input(value)


class Undefined(Exception):
    """What a builtin that is undefined for its arguments raises (the bindings cannot return
    undefined: OPA, strict here, reports a builtin error, which the Rust side does not compare)."""


def _parse_cidr(text):
    """Palisade's parse_cidr (core/src/policy/net.rs): (first, last, is_v6) or None."""
    if not isinstance(text, str) or "/" not in text:
        return None
    ip, prefix = text.split("/", 1)
    if not prefix or len(prefix) > 3 or any(c not in "0123456789" for c in prefix):
        return None
    prefix = int(prefix)
    if "%" in ip:  # a zone: Rust's parser refuses it
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    bits = 128 if addr.version == 6 else 32
    if prefix > bits:
        return None
    host = (1 << (bits - prefix)) - 1
    first = int(addr) & ~host
    return first, first | host, ":" in ip


def ip_coverage(blocks):
    """`palisade.ip_coverage`, Palisade's own builtin (not OPA's), as core/src/policy/net.rs
    computes it: the share of the IPv4 and of the IPv6 space the ipBlocks reach."""
    if not isinstance(blocks, list):
        raise Undefined()
    reached = {False: [], True: []}
    for block in blocks:
        if not isinstance(block, dict):
            raise Undefined()
        net = _parse_cidr(block.get("cidr"))
        if net is None:
            raise Undefined()
        first, last, v6 = net
        holes = []
        excepts = block.get("except")
        if isinstance(excepts, list):
            for text in excepts:
                hole = _parse_cidr(text)
                if hole is None:
                    raise Undefined()
                a, b, hole_v6 = hole
                if hole_v6 == v6 and first <= a and b <= last:
                    holes.append((a, b))
        start = first
        for a, b in _union(holes):
            if start is None:
                break
            if a > start:
                reached[v6].append((start, a - 1))
            start = b + 1 if b < last else None
        if start is not None:
            reached[v6].append((start, last))

    def share(ranges, bits):
        merged = _union(ranges)
        if merged == [(0, (1 << bits) - 1)]:
            return 1.0
        count = sum(b - a + 1 for a, b in merged)
        return min(count / float(2**bits), 1.0 - sys.float_info.epsilon)

    return {"ipv4": share(reached[False], 32), "ipv6": share(reached[True], 128)}


def _union(ranges):
    out = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def main():
    engine = None
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "load":
            if engine is not None:
                engine.close()
            engine = OpaEngine()
            # Prints in a template go nowhere, as in Gatekeeper.
            engine.print_handler = lambda message, location: None
            try:
                engine.register_function("palisade.ip_coverage", ip_coverage, arity=1)
                for name, source in request["modules"].items():
                    engine.add_policy(name, source)
                engine.add_data(request.get("data", {}))
                answer = {"ok": True}
            except OpaError as e:
                answer = {"error": str(e)}
        elif op == "eval":
            results = []
            for text in request["inputs"]:
                try:
                    results.append({"value": engine.eval_document(request["path"], text.encode("utf-8"))})
                except OpaUndefinedError:
                    results.append({"undefined": True})
                except OpaError as e:
                    results.append({"error": str(e)})
            answer = {"results": results}
        else:
            answer = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
