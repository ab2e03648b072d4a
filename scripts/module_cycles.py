#!/usr/bin/env python3
"""Finds import cycles between the modules of each workspace crate.

A module is one file (`src/a.rs` or `src/a/mod.rs` is `a`, `src/a/b.rs` is
`a::b`). Module `m` imports module `t` when it names a path into `t`
(`use super::t::X`, `crate::a::t::f(...)`, `use super::{t, u}`); paths to
an ancestor or a descendant of `m` (a parent's re-exports, a child it
declares) do not count. Unit-test modules (`#[cfg(test)] mod tests`) are
left out. Prints every cycle (a strongly connected set of two or more
modules) and exits 1 if there is one.

Usage: scripts/module_cycles.py [CRATE_DIR...]  (default: every crate of
the workspace and the firmware)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_RE = re.compile(rf"\b(crate|super|self)((?:::{IDENT})+)")
USE_RE = re.compile(r"\buse\s+([^;]+);", re.S)


def crate_dirs():
    out = []
    for toml in sorted(ROOT.glob("**/Cargo.toml")):
        if "target" in toml.parts or "fuzz" in toml.parts:
            continue
        if (toml.parent / "src").is_dir():
            out.append(toml.parent)
    return out


def module_of(src: Path, f: Path):
    rel = f.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
        parts = parts[:-1]
    return tuple(parts)


def strip(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests", text)
    return text[: cut.start()] if cut else text


def expand(tree: str):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [tree]
    head, body = tree[:i], tree[i + 1 : -1]
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    if cur:
        items.append(cur)
    return [p for it in items for p in expand(head + it)]


def resolve(me, path, modules):
    segs = path.split("::")
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = me
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        rest = segs
    else:
        return None
    best = None
    for n in range(len(rest) + 1):
        cand = base + tuple(rest[:n])
        if cand in modules:
            best = cand
    return best


def related(a, b):
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def cycles(crate: Path):
    src = crate / "src"
    files = {module_of(src, f): f for f in src.rglob("*.rs")}
    edges = {m: set() for m in files}
    for m, f in files.items():
        text = strip(f.read_text())
        paths = [p for u in USE_RE.findall(text) for p in expand(u)]
        paths += [g[0] + g[1] for g in PATH_RE.findall(text)]
        for p in paths:
            t = resolve(m, p, files)
            if t is not None and not related(m, t):
                edges[m].add(t)
    # Tarjan's strongly connected components.
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                out.append(sorted("::".join(c) or "crate" for c in comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main():
    dirs = [Path(a).resolve() for a in sys.argv[1:]] or crate_dirs()
    found = 0
    for d in dirs:
        for c in cycles(d):
            found += 1
            print(f"{d.relative_to(ROOT)}: cycle between {', '.join(c)}")
    if found:
        sys.exit(1)
    print(f"no module import cycles in {len(dirs)} crates")


if __name__ == "__main__":
    main()
