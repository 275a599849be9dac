"""The shape of the code: core/ reads top to bottom (no import cycle, lazy imports included), never reaches
up into the studio (gradio, ui, app), and keeps each module to one concern of a readable size.

A module's `if __name__ == "__main__":` block is the program `python -m core.x` runs, not part of the module
`core.x` others import: what it imports (`core.runs` hands its command to `core.listing`) is no edge of the graph."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted((ROOT / "core").glob("*.py"))


def is_main_block(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and [getattr(c, "value", None) for c in test.comparators] == ["__main__"]
    )


def imports(source: str, program: bool = False) -> set[str]:
    """Every module `source` imports, at the top or inside a function (in its `__main__` block too if
    `program`), with `from core import x` as core.x."""
    found = set()
    module = ast.parse(source)
    module.body = [n for n in module.body if program or not is_main_block(n)]
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "core":
                found |= {f"core.{a.name}" for a in node.names}
    return found


def core_graph() -> dict[str, set[str]]:
    names = {f"core.{p.stem}" for p in CORE}
    return {f"core.{p.stem}": (imports(p.read_text()) & names) - {f"core.{p.stem}"} for p in CORE}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_core_has_no_import_cycle():
    assert find_cycle(core_graph()) is None, " -> ".join(find_cycle(core_graph()))


def test_imports_counts_lazy_imports_but_not_the_program_block():
    source = "import a\nfrom core import b\ndef f():\n    import c\nif __name__ == '__main__':\n    import d\n"
    assert imports(source) == {"a", "core", "core.b", "c"}
    assert imports(source, program=True) == {"a", "core", "core.b", "c", "d"}


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_never_imports_the_studio(path):
    studio = ("gradio", "gradio_client", "ui", "app")
    upward = {m for m in imports(path.read_text(), program=True) if m.split(".")[0] in studio}
    assert not upward, f"{path.name} imports {upward}"


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_no_core_module_outgrows_one_concern(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 420, f"{path.name} has {lines} lines; split it by concern"


def test_the_gpu_session_script_fits_one_device_call_and_hides_no_failure():
    """bench/gpu_session.sh runs once on a lent GPU, in one call of at most 600 s: its steps' own timeouts
    leave time to install the wheels and start; the CUDA tests run without -x, so every failure shows; and
    every result goes under $OUT, the only folder that comes back."""
    import re

    script = (ROOT / "bench" / "gpu_session.sh").read_text().replace("\\\n", " ")  # a step's continued lines
    steps = [line for line in script.splitlines() if line.startswith("timeout ")]
    assert len(steps) >= 5
    assert sum(int(re.match(r"timeout (\d+)", line).group(1)) for line in steps) <= 575
    pytest_steps = [line for line in steps if "pytest" in line]
    assert pytest_steps and not any(re.search(r"\s-x\b|--exitfirst|--maxfail", line) for line in pytest_steps)
    assert all('--out "$OUT/' in line for line in steps if "bench/" in line)
