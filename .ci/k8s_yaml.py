#!/usr/bin/env python3
"""Reads the Kubernetes artefacts the way kubectl and Helm do (YAML 1.1, PyYAML) and validates
every example SyncNetwork against the CRD's openAPIV3Schema.

    python3 .ci/k8s_yaml.py [rendered.yaml ...]

Checks:
- the CRD (both copies), every example and every rendered manifest given on the command line parse
  as YAML 1.1;
- every string enum in the CRD is read as strings (a bare `off` is the boolean false there);
- every SyncNetwork example validates against the schema as the apiserver checks it: `nullable`,
  integer `format` bounds, unknown fields refused (kubectl's default strict field validation),
  `x-kubernetes-*` extensions handled;
- the checker itself refuses what the apiserver refuses (a boolean mode, a u32 out of range, an
  unknown field), so a broken checker cannot pass silently;
- Prometheus Operator objects in the rendered files (no schema for them in kubernetes-validate):
  ServiceMonitor/PodMonitor structure, and a PrometheusRule's rules through `promtool check rules`
  and the unit tests in .ci/alerts_test.yaml (`promtool test rules`).
"""

import copy
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRDS = ["crds/syncnetwork.yaml", "charts/syncnet-operator/crds/syncnetwork.yaml"]


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def enums(schema, path=""):
    """Yields (path, value) for every enum value in the schema."""
    if isinstance(schema, dict):
        for v in schema.get("enum", []):
            yield path, v
        for k, v in schema.items():
            if k != "enum":
                yield from enums(v, f"{path}.{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            yield from enums(v, f"{path}[{i}]")


def to_jsonschema(s):
    """The structural schema as plain JSON Schema, with what the apiserver adds to it."""
    if not isinstance(s, dict):
        return s
    s = dict(s)
    if "properties" in s:
        s["properties"] = {n: to_jsonschema(v) for n, v in s["properties"].items()}
    for k in ("items", "additionalProperties", "not"):
        if isinstance(s.get(k), dict):
            s[k] = to_jsonschema(s[k])
    for k in ("allOf", "anyOf", "oneOf"):
        if k in s:
            s[k] = [to_jsonschema(v) for v in s[k]]
    t = s.get("type")
    if s.get("x-kubernetes-int-or-string"):
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if t == "object" and "properties" in s and "additionalProperties" not in s \
            and not s.get("x-kubernetes-preserve-unknown-fields"):
        # Strict field validation: an unknown field is an error, not silently pruned.
        s["additionalProperties"] = False
    if s.get("nullable") and t:
        s["type"] = [t, "null"]
        if "enum" in s:
            s["enum"] = list(s["enum"]) + [None]
    return s


def validator(crd):
    root = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    root.setdefault("properties", {})
    # apiVersion/kind/metadata are the apiserver's; the examples give them.
    for k in ("apiVersion", "kind"):
        root["properties"].setdefault(k, {"type": "string"})
    root["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft4Validator(to_jsonschema(root))


def errors(v, doc):
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in v.iter_errors(doc))


DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def check_monitoring(doc, where, failures):
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind in ("ServiceMonitor", "PodMonitor"):
        key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
        sel = spec.get("selector") or {}
        if not (sel.get("matchLabels") or sel.get("matchExpressions")):
            failures.append(f"{where}: {kind} selects nothing")
        eps = spec.get(key) or []
        if not eps:
            failures.append(f"{where}: {kind} has no {key}")
        for e in eps:
            if not isinstance(e.get("port"), str):
                failures.append(f"{where}: {kind} endpoint without a named port")
            for k in ("interval", "scrapeTimeout"):
                if k in e and not DURATION.match(str(e[k])):
                    failures.append(f"{where}: {kind} {k} {e[k]!r} is not a duration")
    elif kind == "PrometheusRule":
        promtool = shutil.which("promtool")
        if not promtool:
            failures.append(f"{where}: promtool not found (apt-get install prometheus)")
            return
        with tempfile.TemporaryDirectory() as d:
            def promtool_on(name, data, *cmd):
                path = os.path.join(d, name)
                with open(path, "w") as f:
                    yaml.safe_dump(data, f)
                r = subprocess.run([promtool, *cmd, path], capture_output=True, text=True)
                if r.returncode != 0:
                    failures.append(f"{where}: promtool {' '.join(cmd)}: {r.stdout}{r.stderr}")
                return path, r.returncode == 0

            rules, ok = promtool_on("rules.yaml", spec, "check", "rules")
            ns = doc["metadata"].get("namespace")
            if not ok or ns != "syncnet" or not doc["metadata"]["name"].startswith("t-"):
                return  # the unit tests are written for release t in namespace syncnet
            tests = yaml.safe_load(open(os.path.join(ROOT, ".ci", "alerts_test.yaml")))
            tests["rule_files"] = [rules]
            if promtool_on("test.yaml", tests, "test", "rules")[1]:
                check_monitoring.tested = True


def main(rendered):
    failures = []
    crds = [load_all(os.path.join(ROOT, p)) for p in CRDS]
    crd = crds[0][0]
    for p, docs in zip(CRDS, crds):
        if docs[0] != crd:
            failures.append(f"{p}: differs from {CRDS[0]} as YAML 1.1 reads it")
    for path, value in enums(crd):
        if not isinstance(value, str):
            failures.append(f"CRD enum {path}: {value!r} is read as {type(value).__name__}, "
                            "not a string (quote it)")
    v = validator(crd)

    examples = sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml")))
    checked = 0
    for path in examples:
        for doc in load_all(path):
            if isinstance(doc, dict) and doc.get("kind") == "SyncNetwork":
                checked += 1
                for e in errors(v, doc):
                    failures.append(f"{os.path.relpath(path, ROOT)}: {e}")
    if checked == 0:
        failures.append("no SyncNetwork examples found")

    # The checker refuses what the apiserver refuses.
    good = next(d for p in examples for d in load_all(p) if d.get("kind") == "SyncNetwork")
    for what, edit in [
        ("bare off (YAML 1.1 false)", lambda d: d["spec"].__setitem__("broadcast", {"mode": False})),
        ("u32 out of range", lambda d: d["spec"].setdefault("latency", {}).__setitem__("jitterMs", 2**32)),
        ("unknown field", lambda d: d["spec"].__setitem__("surprise", 1)),
        ("too many faults", lambda d: d["spec"].__setitem__("faults", d["spec"].get("faults", [{}])[:1] * 65)),
    ]:
        bad = copy.deepcopy(good)
        edit(bad)
        if not errors(v, bad):
            failures.append(f"the schema check accepted a spec with {what}")

    kinds = set()
    for path in rendered:
        try:
            docs = load_all(path)
        except yaml.YAMLError as e:
            failures.append(f"{path}: not YAML 1.1: {e}")
            continue
        if not docs:
            failures.append(f"{path}: no documents")
        for doc in docs:
            if isinstance(doc, dict):
                kinds.add(doc.get("kind"))
                check_monitoring(doc, f"{path}: {doc.get('kind')}", failures)

    for f in failures:
        print(f"k8s_yaml: {f}", file=sys.stderr)
    if failures:
        return 1
    monitoring = sorted(k for k in kinds if k in ("ServiceMonitor", "PodMonitor", "PrometheusRule"))
    print(f"k8s_yaml: CRD, {checked} examples and {len(rendered)} rendered files read as YAML 1.1; "
          f"examples valid against the CRD schema; checked {', '.join(monitoring) or 'no monitoring objects'}"
          + ("; alert rules unit-tested" if getattr(check_monitoring, "tested", False) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
