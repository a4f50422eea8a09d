#!/usr/bin/env python3
"""Checks the layout of src/ against the limits a reader needs (issue 14):

  - no import cycle between the top-level modules of the crate (each imports only
    from layers below it);
  - no file over MAX_FILE_LINES lines without its #[cfg(test)] module;
  - no function over MAX_FN_LINES lines, and none on a room message's path
    (MESSAGE_PATH below) over MAX_PATH_FN_LINES;
  - docs/ARCHITECTURE.md's "One message's journey" names every function of
    MESSAGE_PATH and links its file.

  python3 tools/layout.py                   report and check every limit (exit 1 if one
                                            is broken)
  python3 tools/layout.py --enforce cycles  report all, fail only on import cycles
  python3 tools/layout.py --report          report only (exit 0)

Rust is not parsed, only read line by line: a function runs from its `fn` line to the
line where its braces balance (strings, chars and comments are skipped).
"""
import os
import re
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
MAX_FILE_LINES = 300
MAX_FN_LINES = 60
MAX_PATH_FN_LINES = 40

# The functions a room message passes through, socket to every member's socket, as
# (file under src/, function name). Kept in step with docs/ARCHITECTURE.md.
MESSAGE_PATH = [
    ("door.rs", "accept_loop"),
    ("door.rs", "admit"),
    ("door.rs", "handle"),
    ("door.rs", "read_request"),
    ("ws/upgrade.rs", "upgrade"),
    ("ws/handshake.rs", "check"),
    ("ws/handshake.rs", "route"),
    ("ws/handshake.rs", "check_upgrade"),
    ("ws/handshake.rs", "check_access"),
    ("ws/upgrade.rs", "take_slots"),
    ("ws/upgrade.rs", "run"),
    ("ws/connection.rs", "serve"),
    ("ws/connection.rs", "start_writer"),
    ("ws/connection.rs", "admit"),
    ("ws/connection.rs", "join_and_read"),
    ("hub/handle.rs", "join"),
    ("ws/reader.rs", "read_loop"),
    ("ws/reader.rs", "deliver"),
    ("ws/reader.rs", "publish"),
    ("hub/handle.rs", "post"),
    ("hub/mod.rs", "run"),
    ("hub/mod.rs", "apply"),
    ("hub/rooms.rs", "publish_here"),
    ("hub/rooms.rs", "publish"),
    ("room/history.rs", "append"),
    ("room/message.rs", "new"),
    ("protocol/envelope.rs", "frame_room_message"),
    ("hub/rooms.rs", "broadcast"),
    ("hub/offer.rs", "offer"),
    ("ws/writer.rs", "write_loop"),
    ("ws/inbox.rs", "next"),
    ("ws/writer.rs", "write_batch"),
    ("ws/writer.rs", "write_one"),
    ("ws/writer.rs", "write_data"),
]


def strip_code(line, state):
    """The line without string/char literals and comments; `state` carries whether a
    block comment or a string is still open from the line before."""
    out = []
    i = 0
    while i < len(line):
        if state["block"]:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out)
            state["block"] = False
            i = end + 2
            continue
        if state["string"]:
            if line[i] == "\\":
                i += 2
                continue
            if line[i] == '"':
                state["string"] = False
            i += 1
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        if c == '"':
            state["string"] = True
            i += 1
            continue
        if c == "'":
            # a char literal ('x', '\n', '{'), not a lifetime ('a)
            m = re.match(r"'(\\.|[^\\'])'", line[i:])
            if m:
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def rust_files():
    for folder, _, files in os.walk(SRC):
        for name in sorted(files):
            if name.endswith(".rs"):
                yield os.path.join(folder, name)


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def code_lines(lines):
    """Lines before the file's #[cfg(test)] module."""
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]" and i + 1 < len(lines) and "mod " in lines[i + 1]:
            return lines[:i]
    return lines


FN_RE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")


def functions(lines):
    """(name, first line number, length) of every function with a body."""
    found = []
    state = {"block": False, "string": False}
    stripped = [strip_code(line, state) for line in lines]
    i = 0
    while i < len(lines):
        m = FN_RE.match(lines[i])
        if not m:
            i += 1
            continue
        depth, opened, j = 0, False, i
        while j < len(lines):
            text = stripped[j]
            if not opened and ";" in text and "{" not in text:
                break  # a declaration without a body (trait method)
            for c in text:
                if c == "{":
                    depth += 1
                    opened = True
                elif c == "}":
                    depth -= 1
            if opened and depth == 0:
                found.append((m.group(5), i + 1, j - i + 1))
                break
            j += 1
        i += 1
    return found


USE_RE = re.compile(r"\b(crate|super)((?:::\w+)+)")


def imports(path, lines):
    """Top-level modules this file names through `crate::` or `super::` paths."""
    me = module_of(path)
    found = set()
    state = {"block": False, "string": False}
    for line in lines:
        text = strip_code(line, state)
        for root, rest in USE_RE.findall(text):
            parts = rest.strip(":").split("::")
            if root == "super":
                base = me[:-1] if not path.endswith("mod.rs") else me[:-1]
                full = base + parts
            else:
                full = parts
            if full:
                found.add(full[0])
    # `use super::{a, b}` and `use crate::{a, b}` groups
    joined = " ".join(lines)
    for root, group in re.findall(r"\b(crate|super)::\{([^}]*)\}", joined):
        for item in group.split(","):
            name = item.strip().split("::")[0].strip()
            if not name or name == "self":
                continue
            if root == "crate":
                found.add(name)
            else:
                base = me[:-1]
                found.add((base + [name])[0])
    return found


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def journey_mismatches():
    """Where docs/ARCHITECTURE.md's "One message's journey" and MESSAGE_PATH differ:
    each function must be named there (in backticks), with a link to its file."""
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.find("## One message's journey")
    end = text.find("\n## ", start + 1)
    if start < 0:
        return ["docs/ARCHITECTURE.md has no \"One message's journey\" section"]
    journey = text[start:end]
    out = []
    for file, name in MESSAGE_PATH:
        if f"`{name}`" not in journey:
            out.append(f"journey: ARCHITECTURE.md does not name `{name}` (src/{file})")
        if f"(../src/{file})" not in journey:
            out.append(f"journey: ARCHITECTURE.md does not link src/{file}")
    return out


def main():
    report_only = "--report" in sys.argv
    only_cycles = "--enforce" in sys.argv and "cycles" in sys.argv
    problems = []
    graph = defaultdict(set)
    long_files, long_fns = [], []
    for path in rust_files():
        rel = os.path.relpath(path, ROOT)
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        code = code_lines(lines)
        if len(code) > MAX_FILE_LINES:
            long_files.append((len(code), rel))
        for name, line, length in functions(code):
            if length > MAX_FN_LINES:
                long_fns.append((length, f"{rel}:{line} {name}"))
        me = module_of(path)
        if me and os.path.basename(path) != "main.rs":
            top = me[0]
            for other in imports(path, code):
                if other != top and os.path.exists(os.path.join(SRC, other)) or \
                        os.path.exists(os.path.join(SRC, other + ".rs")):
                    if other != top:
                        graph[top].add(other)
    path_fns = []
    for file, name in MESSAGE_PATH:
        path = os.path.join(SRC, file)
        with open(path, encoding="utf-8") as f:
            lines = code_lines(f.read().split("\n"))
        lengths = [length for fn, _, length in functions(lines) if fn == name]
        if not lengths:
            problems.append(f"message path: no fn {name} in src/{file}")
            continue
        path_fns.append((max(lengths), f"src/{file} {name}"))
    found_cycles = cycles(graph)
    problems += journey_mismatches()

    print(f"files over {MAX_FILE_LINES} lines without tests: {len(long_files)}")
    for n, rel in sorted(long_files, reverse=True):
        print(f"  {n:5} {rel}")
    print(f"functions over {MAX_FN_LINES} lines: {len(long_fns)}")
    for n, where in sorted(long_fns, reverse=True):
        print(f"  {n:5} {where}")
    print(f"import cycles between top-level modules: {len(found_cycles)}")
    for comp in found_cycles:
        print("  " + " <-> ".join(comp))
    if MESSAGE_PATH:
        files = len({f for f, _ in MESSAGE_PATH})
        print(f"message path: {len(MESSAGE_PATH)} functions in {files} files")
        for n, where in path_fns:
            mark = "  over" if n > MAX_PATH_FN_LINES else ""
            print(f"  {n:5} {where}{mark}")
    over_path = [w for n, w in path_fns if n > MAX_PATH_FN_LINES]
    problems += [f"file over {MAX_FILE_LINES} lines: {r}" for _, r in long_files]
    problems += [f"function over {MAX_FN_LINES} lines: {w}" for _, w in long_fns]
    problems += [f"import cycle: {' <-> '.join(c)}" for c in found_cycles]
    problems += [f"message-path function over {MAX_PATH_FN_LINES} lines: {w}" for w in over_path]
    if only_cycles:
        problems = [p for p in problems if p.startswith("import cycle")]
    if problems and not report_only:
        for problem in problems:
            print(f"layout: {problem}", file=sys.stderr)
        print(f"layout: {len(problems)} problems", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
