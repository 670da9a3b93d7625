"""The layers of engine/ketasim stay true (ARCHITECTURE.md): a file includes only headers of its
own layer or of layers listed before it, and no two headers of one layer include each other in a
cycle. Also checks that every engine file sits in a layer folder.
usage: layers.py ENGINE_DIR   (engine/ketasim)
"""
import os
import re
import sys

# The pipeline, lowest first. Keep in step with ARCHITECTURE.md and engine/CMakeLists.txt.
LAYERS = ["base", "model", "input", "solve", "output", "run", "analysis"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"ketasim/([a-z_]+)/([A-Za-z0-9_.]+)"', re.M)


def main(root):
    problems = []
    graph = {}
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            relative = os.path.relpath(path, root)
            parts = relative.split(os.sep)
            if len(parts) != 2 or parts[0] not in LAYERS:
                problems.append(f"{relative}: not in a layer folder ({', '.join(LAYERS)})")
                continue
            layer = parts[0]
            with open(path, encoding="utf-8") as f:
                text = f.read()
            for match in INCLUDE.finditer(text):
                target_layer, header = match.groups()
                line = text.count("\n", 0, match.start()) + 1
                if target_layer not in LAYERS:
                    problems.append(f"{relative}:{line}: includes ketasim/{target_layer}/{header}, not a layer")
                elif LAYERS.index(target_layer) > LAYERS.index(layer):
                    problems.append(f"{relative}:{line}: layer '{layer}' includes ketasim/{target_layer}/{header}"
                                    f" from the later layer '{target_layer}'")
                graph.setdefault(relative, set()).add(f"{target_layer}/{header}")
    # Cycles among headers (a header including, through others, itself).
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                problems.append("include cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node.endswith(".hpp") and node not in state:
            visit(node, [node])
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} layering problem(s)")
        return 1
    print(f"layers {' -> '.join(LAYERS)}: every include points down or sideways")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
