#!/usr/bin/env python3
"""Checks the module's layering (make lint runs it; it fails on any breach):

- src/ files import each other without a cycle;
- every import points down: commands -> services -> ffi, and types/info -> services -> ffi;
  ffi imports nothing of the module above it; lib.rs (registration) may use every layer;
- `unsafe` appears only under src/ffi/, and fence-core (core/) has none and no `redis_module`.

Prints the dependency edges between layers and the count of files and `unsafe` blocks per
layer. A module counts as imported when a file names it: `use crate::x`, `crate::x::...`, or
`super::x` from a file inside a directory.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")
CORE = os.path.join(ROOT, "core", "src")

LAYER_ORDER = {"lib": 4, "commands": 3, "types": 3, "info": 3, "services": 2, "ffi": 1}
ALLOWED = {
    "lib": {"commands", "types", "info", "services", "ffi"},
    "commands": {"services", "ffi"},
    "types": {"services", "ffi"},
    "info": {"services", "ffi"},
    "services": {"ffi"},
    "ffi": set(),
}


def files(root):
    for dirpath, _, names in os.walk(root):
        for n in sorted(names):
            if n.endswith(".rs"):
                yield os.path.join(dirpath, n)


def module_of(path):
    """`commands/lock.rs` -> ("commands", "commands::lock"); `lib.rs` -> ("lib", "lib")."""
    rel = os.path.relpath(path, SRC).replace(os.sep, "/")[:-3]
    parts = rel.split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    layer = parts[0]
    return layer, "::".join(parts)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def imports(path, text):
    layer, module = module_of(path)
    found = set()
    for m in re.finditer(r"\bcrate::([a-z_]+)(?:::([a-z_]+))?", text):
        found.add(m.group(1) if not m.group(2) else f"{m.group(1)}::{m.group(2)}")
    # super:: inside a directory refers to its parent module.
    parent = module.rsplit("::", 1)[0] if "::" in module else None
    if path.endswith("mod.rs"):
        parent = module.rsplit("::", 1)[0] if "::" in module else None
    for m in re.finditer(r"\bsuper::([a-z_]+)", text):
        if parent:
            found.add(f"{parent}::{m.group(1)}")
        else:
            found.add(m.group(1))
    # `use super::{a, b}` / `use crate::{a::b, c}`
    for m in re.finditer(r"\buse\s+(crate|super)::\{([^}]*)\}", text):
        base = parent if m.group(1) == "super" and parent else None
        for item in m.group(2).split(","):
            name = item.strip().split("::")[0].strip()
            if not name or name == "self":
                continue
            found.add(f"{base}::{name}" if base else name)
    return found


def main():
    ok = True
    modules = {}
    for path in files(SRC):
        layer, module = module_of(path)
        modules[module] = (layer, path)
    known = set(modules)
    graph = {}
    unsafe_count = {}
    for module, (layer, path) in modules.items():
        text = strip_comments(open(path).read())
        deps = set()
        for target in imports(path, text):
            # Resolve to the longest known module prefix.
            parts = target.split("::")
            while parts and "::".join(parts) not in known:
                parts.pop()
            if parts:
                t = "::".join(parts)
                if t != module:
                    deps.add(t)
        graph[module] = deps
        blocks = len(re.findall(r"\bunsafe\b", text))
        if blocks:
            unsafe_count.setdefault(layer, [0, 0])
            unsafe_count[layer][0] += 1
            unsafe_count[layer][1] += blocks
            if layer != "ffi":
                print(f"check-layers: `unsafe` outside src/ffi: {os.path.relpath(path, ROOT)}")
                ok = False
        for d in deps:
            dl = modules[d][0]
            if dl != layer and dl not in ALLOWED.get(layer, set()):
                print(f"check-layers: {module} ({layer}) imports {d} ({dl}): against the layers")
                ok = False
    # Cycles between files (a module importing its parent mod.rs for re-exports counts).
    state = {}
    stack = []

    def visit(m):
        nonlocal ok
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                print("check-layers: import cycle: " + " -> ".join(cycle))
                ok = False
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    for path in files(CORE):
        text = strip_comments(open(path).read())
        if re.search(r"\bunsafe\b", text) or "redis_module" in text:
            print(f"check-layers: fence-core must stay plain Rust: {os.path.relpath(path, ROOT)}")
            ok = False
    edges = sorted({(modules[m][0], modules[d][0]) for m in graph for d in graph[m] if modules[m][0] != modules[d][0]})
    print("check-layers: layer edges: " + ", ".join(f"{a}->{b}" for a, b in edges))
    print("check-layers: files and `unsafe` occurrences per layer: "
          + ", ".join(f"{l}: {c[0]} files, {c[1]}" for l, c in sorted(unsafe_count.items())))
    print(f"check-layers: {len(graph)} files, "
          + ("no cycle, every import points down" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
