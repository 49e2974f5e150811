"""The layers of the package, read from every module's imports (those inside functions too).

Lowest first: a module may import from its own layer and the ones below, never from above;
only ``ros`` reaches rclpy and the ROS message packages; the command line (``cli``) sits on
top and imports the ROS shell only inside functions, so that the core commands run where ROS
is absent. Every module imports without rclpy except those of ``ros``.
"""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import rayemb_ros

PACKAGE = Path(rayemb_ros.__file__).parent
LAYERS = ["base", "geometry", "io", "imaging", "learning", "estimation", "evaluation", "ros", "cli"]
# Top-level modules: the one source of defaults and the errors every layer raises.
BASE = {"params": "base", "errors": "base"}
# Generated from msg/ and srv/ (the ROS interfaces): part of the ROS shell.
GENERATED = {"msg": "ros", "srv": "ros"}
ROS_PACKAGES = {"rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "tf2_msgs", "diagnostic_msgs",
                "visualization_msgs", "builtin_interfaces", "rcl_interfaces", "launch", "launch_ros",
                "ament_index_python"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str | None:
    """The layer of a rayemb_ros module (None for the package itself)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    return {**BASE, **GENERATED}.get(parts[1], parts[1])


def imports(path: Path) -> list[tuple[str, bool]]:
    """Every module ``path`` imports, absolute, with whether the import sits inside a function."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}: relative import; use absolute rayemb_ros... imports"
                base = child.module or ""
                for alias in child.names:  # `from rayemb_ros.x import y` may import module x.y
                    name = f"{base}.{alias.name}"
                    found.append((name if name in MODULES else base, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def test_every_module_belongs_to_a_layer():
    assert set(LAYERS) - {"base"} <= {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    for module in MODULES:
        assert layer(module) in (None, *LAYERS), f"{module} is in no layer of {LAYERS}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    own = layer(module)
    rank = LAYERS.index(own) if own else 0
    for name, in_function in imports(MODULES[module]):
        top = name.split(".")[0]
        if top == "rayemb_ros":
            target = layer(name)
            if target is None:
                continue
            assert name.split(".")[1] in GENERATED or name in MODULES, f"{module} imports {name}, which does not exist"
            assert LAYERS.index(target) <= rank, f"{module} ({own}) imports {name} ({target}), a higher layer"
            if own == "cli" and target == "ros":
                assert in_function, f"{module} imports the ROS shell ({name}) at module level"
        elif top in ROS_PACKAGES:
            assert own == "ros", f"{module} ({own}) imports {name}: only rayemb_ros.ros may reach ROS"


def test_no_import_cycles():
    """Between modules, counting imports inside functions too (a lazy import that closes a
    cycle still couples the two both ways)."""
    graph = {m: {n for n, _ in imports(p) if n in MODULES and n != m} for m, p in MODULES.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module):] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in graph[module]:
            visit(target, path + [module])
        done.add(module)

    for module in graph:
        visit(module, [])


def test_the_checker_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\ndef f():\n    from rayemb_ros.ros import node\n")
    assert imports(probe) == [("os", False), ("rayemb_ros.ros.node", True)]


def test_core_modules_import_without_rclpy():
    core = sorted(m for m in MODULES if layer(m) not in ("ros", "cli"))
    assert "rayemb_ros.estimation.estimator" in core and "rayemb_ros.geometry.camera" in core
    assert all(importlib.util.find_spec(m) for m in core)
    probe = (
        "import importlib, sys\n"
        f"for name in {core + [m for m in MODULES if layer(m) == 'cli' and not m.endswith('__main__')]!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.'))\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_unused_imports(module):
    """Dead imports hide what a module really depends on. An import kept for its side effect
    says so with `# noqa`."""
    source = MODULES[module].read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", "") != "__future__":
            if "noqa" in lines[node.lineno - 1]:
                continue
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                assert name in used, f"{module}:{node.lineno} imports {alias.name} and never uses it"
