"""The package's shape, checked by parsing imports: dependencies run one way, the math knows
nothing of Ray, the package never imports its examples or benchmarks, modules stay small."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, id(node) in top))
            # `from pkg import submodule` imports the submodule too.
            out += [(f"{node.module}.{a.name}", id(node) in top) for a in node.names
                    if (ROOT / (node.module.replace(".", "/") + f"/{a.name}.py")).exists()]
    return out


def sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


PACKAGES = ("rllib_rpp", "envs", "rpp_hub")
GRAPH = {module_name(p): imports(p) for p in sources(*PACKAGES)}


def first_party(name: str) -> str | None:
    """The module of ours that `name` refers to (the longest known prefix), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in GRAPH:
            return ".".join(parts[:i])
    return None


def test_the_package_never_imports_its_examples_or_benchmarks():
    bad = [(m, name) for m, names in GRAPH.items() if m.startswith("rllib_rpp") for name, _ in names
           if name.split(".")[0] in ("tuned_examples", "benchmarks", "tests")]
    assert not bad


def imported_at_runtime(module: str) -> set[str]:
    """Top-level package names present in sys.modules after importing `module` alone."""
    code = f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(out.stdout.split())


def test_rpp_hub_knows_nothing_of_envs_rllib_rpp_or_ray():
    bad = [(m, name) for m, names in GRAPH.items() if m.startswith("rpp_hub") for name, _ in names
           if name.split(".")[0] in ("rllib_rpp", "envs", "ray")]
    assert not bad
    assert not {"ray", "rllib_rpp", "envs"} & imported_at_runtime("rpp_hub.registry")


def test_envs_know_nothing_of_rllib_rpp_or_ray():
    bad = [(m, name) for m, names in GRAPH.items() if m.startswith("envs") for name, _ in names
           if name.split(".")[0] in ("rllib_rpp", "ray")]
    assert not bad
    assert not {"ray", "rllib_rpp"} & imported_at_runtime("envs")


@pytest.mark.parametrize("module", ["rllib_rpp.functional", "rllib_rpp.estimators", "rllib_rpp.schema",
                                    "rllib_rpp.core", "rllib_rpp.samplers", "rllib_rpp.options",
                                    "rllib_rpp.weight_sync.engines"])
def test_the_math_core_and_samplers_import_no_ray(module):
    # Checked by importing it in a fresh interpreter: package __init__ files count too.
    assert "ray" not in imported_at_runtime(module)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as a path that ends where it starts; None if there is none."""
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            return path[path.index(m):] + [m]
        if state.get(m) != 2:
            state[m] = 1
            for n in sorted(edges[m]):
                # A package's __init__ importing its own submodules is not a cycle.
                if not n.startswith(m + ".") and (cycle := visit(n, path + [m])):
                    return cycle
            state[m] = 2
        return None

    for m in sorted(edges):
        if cycle := visit(m, []):
            return cycle
    return None


def import_edges(module_level_only: bool) -> dict[str, set[str]]:
    return {m: {first_party(n) for n, top in names if (top or not module_level_only) and first_party(n)
                and first_party(n) != m} for m, names in GRAPH.items()}


def test_find_cycle_sees_a_cycle_through_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "pkg": {"pkg.sub"}, "pkg.sub": {"pkg"}}) is None


def test_module_level_imports_have_no_cycles():
    assert find_cycle(import_edges(module_level_only=True)) is None


def test_no_import_cycles_even_through_function_level_imports():
    # A function-level import still makes the two modules depend on each other: a lazy
    # "module:name" path (importlib) is the way to defer a heavy or optional import.
    cycle = find_cycle(import_edges(module_level_only=False))
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_only_the_app_and_the_entry_point_import_the_app():
    bad = [(m, n) for m, names in GRAPH.items() if m.startswith("rllib_rpp") and not m.startswith("rllib_rpp.app")
           and m != "rllib_rpp.__main__" for n, _ in names if n.startswith("rllib_rpp.app")]
    assert not bad


def test_no_hidden_cycles_through_function_level_imports():
    # Runners, samplers and the compute core never reach back into the algorithm package;
    # the sampler interface never imports its implementations (they are a registry).
    lower = ("rllib_rpp.env_runners", "rllib_rpp.samplers", "rllib_rpp.core", "rllib_rpp.functional",
             "rllib_rpp.estimators", "rllib_rpp.schema")
    bad = [(m, n) for m, names in GRAPH.items() if m.startswith(lower) for n, _ in names
           if n.startswith(("rllib_rpp.reinforce_pp", "rllib_rpp.app"))]
    bad += [("rllib_rpp.samplers.base", n) for n, _ in GRAPH["rllib_rpp.samplers.base"]
            if n.startswith(("rllib_rpp.samplers.hf", "rllib_rpp.samplers.vllm"))]
    assert not bad


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in sources(*PACKAGES, "tuned_examples", "benchmarks", "tests")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long


def readme_layout() -> str:
    """The code block of README's "## Layout" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def layout_gaps(layout: str, package_dirs: list[Path]) -> tuple[list[str], list[str]]:
    """(modules and packages the layout leaves out, .py names it lists that do not exist)."""
    import re

    listed = set(re.findall(r"[\w]+\.py\b", layout))
    dirs = set(re.findall(r"([\w/]+)/(?=\s)", layout))
    modules = {p.name for d in package_dirs for p in d.glob("*.py") if p.name != "__init__.py"}
    missing = sorted(f"{d.relative_to(ROOT)}/{p.name}" for d in package_dirs for p in d.glob("*.py")
                     if p.name != "__init__.py" and p.name not in listed)
    missing += sorted(str(d.relative_to(ROOT)) + "/" for d in package_dirs
                      if not any(str(d.relative_to(ROOT)).endswith(x) for x in dirs))
    elsewhere = {p.name for d in ("tests", "benchmarks", "tuned_examples") for p in (ROOT / d).glob("*.py")}
    return missing, sorted(listed - modules - elsewhere)


PACKAGE_DIRS = sorted({p.parent for p in sources(*PACKAGES) if p.name == "__init__.py"})


def test_readme_layout_lists_every_module_and_nothing_that_is_not_there():
    missing, unknown = layout_gaps(readme_layout(), PACKAGE_DIRS)
    assert not missing, f"README's Layout section leaves out {missing}"
    assert not unknown, f"README's Layout section lists modules that do not exist: {unknown}"


def test_layout_check_sees_a_missing_and_an_invented_module():
    layout = readme_layout().replace("functional.py", "functionals.py")
    missing, unknown = layout_gaps(layout, PACKAGE_DIRS)
    assert missing == ["rllib_rpp/functional.py"] and unknown == ["functionals.py"]


def test_the_benchmarks_import_each_other_without_cycles():
    # Their shared helpers live in modules of their own (common, stats, paper_runs).
    graph = {module_name(p): {n for n, _ in imports(p) if n.startswith("benchmarks.")} for p in sources("benchmarks")}
    edges = {m: {n if n in graph else n.rsplit(".", 1)[0] for n in names} & set(graph) - {m}
             for m, names in graph.items()}
    cycle = find_cycle(edges)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
