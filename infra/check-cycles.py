#!/usr/bin/env python3
"""`make lint`: fails when modules of a crate import each other in a cycle.

A module is a file of src/, or a file of a folder module (delivery/, aws/, net/, ...).
Reads the `crate::` and `super::` paths of each file outside comments and
`#[cfg(test)]` code (tests may reach anywhere).

    infra/check-cycles.py functions/core/src [more src dirs...]
"""
import glob
import os
import re
import sys


def module_of(root, path):
    parts = os.path.relpath(path, root)[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts in (["lib"], ["main"]) or parts[0] == "bin":
        return None
    if len(parts) > 1 and parts[1] == "tests":
        return parts[0]
    return "::".join(parts[:2])


def graph(root):
    mods = {}
    for path in glob.glob(root + "/**/*.rs", recursive=True):
        name = module_of(root, path)
        if name is None:
            continue
        src = re.split(r"#\[cfg\(test\)\]", open(path).read())[0]
        src = "\n".join(l for l in src.split("\n") if not l.strip().startswith("//"))
        deps = mods.setdefault(name, set())
        for m in re.finditer(r"\bcrate::([a-z_]+)(?:::([a-z_]+))?", src):
            a, b = m.group(1), m.group(2)
            nested = b and os.path.exists(f"{root}/{a}/{b}.rs")
            deps.add(f"{a}::{b}" if nested else a)
        top = name.split("::")[0]
        if "::" in name:
            for m in re.finditer(r"\bsuper::([a-z_]+)", src):
                b = m.group(1)
                deps.add(f"{top}::{b}" if os.path.exists(f"{root}/{top}/{b}.rs") else top)
        deps.discard(name)
    return mods


def cycles(mods):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in mods.get(v, ()):
            if w not in mods:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in list(mods):
        if v not in index:
            visit(v)
    return out


found = False
for root in sys.argv[1:]:
    mods = graph(root)
    for component in cycles(mods):
        found = True
        print(f"{root}: modules import each other: {', '.join(component)}")
        for m in component:
            print(f"  {m} -> {', '.join(sorted(d for d in mods[m] if d in component))}")
sys.exit(1 if found else 0)
