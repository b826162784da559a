#!/usr/bin/env python3
"""Import cycles between the top-level modules of each crate.

A module `a` depends on `b` when any file of `a` (a.rs, a/**.rs) names `crate::b` (in a path or a
`use crate::{b, ...}` list), or, from `a.rs` / `a/mod.rs` itself, `super::b`. Re-exported names of
other crates (`pub use syncnet_proto::chain` in the node) are not modules of the crate and are
ignored. Prints each crate's dependency edges with `-v`, every cycle found, and exits 1 if there is
one. Run from the workspace root: `python3 .ci/module_cycles.py [-v] [crate ...]`.
"""

import os
import re
import sys

CRATES = ["proto", "node", "soak", "stressnet", "crds", "operator"]


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def modules_of(src):
    """Top-level modules declared in lib.rs (and main.rs for binaries)."""
    mods = set()
    for root in ("lib.rs", "main.rs"):
        p = os.path.join(src, root)
        if os.path.exists(p):
            for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", strip_comments(open(p).read()), re.M):
                mods.add(m.group(1))
    return mods


def names_in_use_list(body):
    """Top-level names of a `use crate::{...}` list (nested braces belong to their head)."""
    names, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            names.append(cur)
            cur = ""
            continue
        if depth == 0:
            cur += ch
    names.append(cur)
    out = []
    for n in names:
        m = re.match(r"\s*(\w+)", n)
        if m:
            out.append(m.group(1))
    return out


def deps(src, mods):
    edges = {m: set() for m in mods}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)
            parts = rel.split(os.sep)
            top = parts[0][:-3] if len(parts) == 1 else parts[0]
            if top not in mods:
                continue
            text = strip_comments(open(path).read())
            used = set(re.findall(r"\bcrate::(\w+)", text))
            for body in re.findall(r"\bcrate::\{(.*?)\};", text, re.S):
                used.update(names_in_use_list(body))
            is_top_file = len(parts) == 1 or (len(parts) == 2 and parts[1] == "mod.rs")
            if is_top_file:
                used.update(re.findall(r"\bsuper::(\w+)", text))
                for body in re.findall(r"\bsuper::\{(.*?)\};", text, re.S):
                    used.update(names_in_use_list(body))
            edges[top].update(u for u in used if u in mods and u != top)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    verbose = "-v" in sys.argv
    bad = False
    for crate in args or CRATES:
        src = os.path.join(crate, "src")
        mods = modules_of(src)
        edges = deps(src, mods)
        if verbose:
            for m in sorted(edges):
                print(f"{crate}: {m} -> {', '.join(sorted(edges[m])) or '-'}")
        found = cycles(edges)
        for c in found:
            bad = True
            print(f"{crate}: import cycle between {', '.join(c)}")
        if not found:
            print(f"{crate}: {len(mods)} modules, no import cycle")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
