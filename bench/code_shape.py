"""The shape of the package: lines per module, its largest function, and the import cycles between modules.

    python bench/code_shape.py [SRC]   (default: src/fruitlake of this checkout)

Every import counts, also those inside functions (they still tie the modules together) and those under
`if TYPE_CHECKING:` (listed apart: they exist for the type checker only).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.Module, name: str, is_package: bool) -> tuple[set[str], set[str]]:
    """(runtime imports, TYPE_CHECKING-only imports) of fruitlake modules."""
    runtime: set[str] = set()
    typing_only: set[str] = set()
    checking: set[int] = set()
    for block in ast.walk(tree):
        test = getattr(block, "test", None)
        if isinstance(block, ast.If) and getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING":
            checking.update(id(node) for node in ast.walk(block))
    base = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        found: list[str] = []
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                anchor = base.split(".")[: len(base.split(".")) - node.level + 1]
                module = ".".join(anchor + ([module] if module else []))
            found = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in found:
            if target.startswith("fruitlake"):
                (typing_only if id(node) in checking else runtime).add(target)
    return runtime, typing_only


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "src" / "fruitlake")
    files = sorted(root.rglob("*.py"))
    modules = {module_name(path, root): path for path in files}
    graph: dict[str, set[str]] = {}
    largest: tuple[int, str] = (0, "")
    print(f"{'module':<32} {'lines':>6}  largest function")
    total = 0
    for name, path in modules.items():
        text = path.read_text()
        tree = ast.parse(text)
        lines = len(text.splitlines())
        total += lines
        functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
        biggest = max(functions, key=lambda f: (f.end_lineno or 0) - f.lineno, default=None)
        size = (biggest.end_lineno or 0) - biggest.lineno + 1 if biggest else 0
        if size > largest[0]:
            largest = (size, f"{name}.{biggest.name}" if biggest else name)
        print(f"{name:<32} {lines:>6}  {biggest.name if biggest else '-'} ({size})")
        runtime, _ = imports(tree, name, path.name == "__init__.py")
        graph[name] = {target for target in runtime if target in modules and target != name}
    print(f"{'total':<32} {total:>6}  largest: {largest[1]} ({largest[0]} lines)")
    found = cycles(graph)
    print(f"import cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))


if __name__ == "__main__":
    main()
