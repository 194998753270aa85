"""The ament_python package: layout, executables, installed share files, layer rules."""

import ast
import configparser
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from snapflow_ros._tools import DESCRIPTIONS, TOOLS, path_name

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "snapflow_ros"


def test_top_level_layout():
    for name in ("snapflow_ros", "launch", "config", "test", "package.xml", "setup.py",
                 "setup.cfg", "README.md", "resource/snapflow_ros"):
        assert (ROOT / name).exists(), name


def test_package_xml_declares_ros_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.findtext("name") == "snapflow_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "trajectory_msgs", "std_msgs", "diagnostic_msgs"):
        assert dep in deps, dep


def test_setup_cfg_puts_executables_where_ros2_run_looks():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/snapflow_ros"
    assert cfg["install"]["install_scripts"] == "$base/lib/snapflow_ros"


def test_installed_console_scripts_are_the_tool_table_with_path_safe_names():
    """pip's console scripts go on PATH: ``snapflow-<tool>``, never a bare ``eval`` or ``bench``
    (``ros2 run`` keeps the table's names: tests/test_install.py)."""
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")
               if ep.value.startswith("snapflow_ros.")}
    assert scripts == {path_name(tool): target for tool, target in TOOLS.items()}
    assert all(name.startswith("snapflow-") and "_" not in name for name in scripts)
    assert path_name("bag_to_lerobot") == "snapflow-bag-to-lerobot"
    assert set(DESCRIPTIONS) == set(TOOLS)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_tool_answers_help_through_python_m(name):
    out = subprocess.run([sys.executable, "-m", "snapflow_ros", name, "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()


def test_dispatcher_lists_tools_and_rejects_unknown_ones():
    out = subprocess.run([sys.executable, "-m", "snapflow_ros"], capture_output=True, text=True)
    assert out.returncode == 0 and all(name in out.stdout for name in TOOLS)
    bad = subprocess.run([sys.executable, "-m", "snapflow_ros", "distil"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown tool 'distil'" in bad.stderr


def test_share_directory_is_installed_and_found_through_the_ament_index():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("snapflow_ros"))
    assert (share / "package.xml").is_file()
    assert (share / "config" / "snapflow.yaml").read_text() == (
        ROOT / "config" / "snapflow.yaml").read_text()


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.parametrize(("layer", "allowed"), [
    ("core", {"torch", "snapflow_ros", "__future__", "math", "dataclasses", "typing",
              "collections"}),
    ("runtime", {"numpy", "snapflow_ros", "__future__", "time", "contextlib", "collections",
                 "dataclasses", "typing", "math", "threading", "enum"}),
    ("conversions", {"numpy", "cv2", "snapflow_ros", "__future__", "typing", "collections",
                     "trajectory_msgs", "struct", "re", "io", "PIL"}),
])
def test_layer_imports(layer, allowed):
    """core is torch-only, runtime numpy-only, conversions work on message fields: no rclpy, no
    lerobot (DESIGN §3)."""
    for path in sorted((PKG / layer).rglob("*.py")):
        assert set(_imports(path)) <= allowed, f"{path.name}: {set(_imports(path)) - allowed}"


# DESIGN §3 as a table: the subpackages each layer may import, besides itself and the neutral
# top-level modules. Anything else (policies → runtime, nodes → apps, data → policies) fails.
NEUTRAL = {"__init__", "_tools", "atomic", "config_cli", "cpu_threads", "paths", "process_exit",
           "sched_guard", "timing", "topic_map", "waiting"}
LAYERS = {
    "core": set(),
    "runtime": set(),
    "conversions": set(),
    "sim": set(),
    "policies": {"core"},
    "inference": {"policies"},
    "distill": {"core", "policies"},
    "data": {"conversions"},
    "nodes": {"conversions", "data", "inference", "policies", "runtime", "sim"},
    "apps": {"core", "runtime", "conversions", "sim", "policies", "inference", "distill", "data",
             "nodes"},
    "__main__": set(),
}
NEUTRAL_IMPORTS: dict[str, set[str]] = {}  # neutral modules import only each other


def _package_imports(path):
    """The ``snapflow_ros`` subpackages / top-level modules that ``path`` imports."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            yield "relative import"
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            parts = name.split(".")
            if parts[0] != "snapflow_ros":
                continue
            if len(parts) > 1:
                yield parts[1]
            else:  # from snapflow_ros import x
                yield from ("__init__" if a.name == "__version__" else a.name
                            for a in node.names)


def _layer_of(path):
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else path.stem


def test_imports_between_layers_follow_the_design_table():
    files = sorted(PKG.rglob("*.py"))
    layers = {_layer_of(p) for p in files}
    unknown = layers - set(LAYERS) - NEUTRAL
    assert not unknown, f"layer not in the table: {unknown}"
    bad = []
    for path in files:
        layer = _layer_of(path)
        allowed = ({layer} | NEUTRAL | LAYERS[layer] if layer in LAYERS
                   else NEUTRAL | NEUTRAL_IMPORTS.get(layer, set()))
        bad += [f"{path.relative_to(PKG)} imports {dep}" for dep in set(_package_imports(path))
                if dep not in allowed]
    assert not bad, "imports DESIGN §3 does not allow:\n" + "\n".join(sorted(bad))


def test_nothing_imports_apps():
    users = [p.relative_to(PKG) for p in sorted(PKG.rglob("*.py"))
             if _layer_of(p) != "apps" and "apps" in set(_package_imports(p))]
    assert not users


def test_core_and_runtime_import_with_ros_and_lerobot_absent():
    code = ("import sys\n"
            "for m in ('rclpy', 'lerobot', 'transformers'): sys.modules[m] = None\n"
            "import snapflow_ros.core, snapflow_ros.runtime, snapflow_ros.timing\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_node_side_of_the_inference_process_never_imports_torch():
    """The node process stays torch-free: its GIL is the executor's and the control loop's."""
    code = ("import sys\n"
            "for m in ('torch', 'lerobot', 'transformers', 'rclpy'): sys.modules[m] = None\n"
            "import snapflow_ros.inference.process_runner, snapflow_ros.runtime.engine\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_only_nodes_and_apps_import_rclpy():
    for path in sorted(PKG.rglob("*.py")):
        if not {"nodes", "apps"} & set(path.relative_to(PKG).parts):
            assert "rclpy" not in set(_imports(path)), path


CONCRETE_MODEL = re.compile(r"^(SnapFlow(SmolVLA|Pi0|Pi05|PI0|PI05)\w*|SmolVLA\w*|PI0\w*|PI05\w*|"
                            r"PaliGemma\w*)$")


def _names(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, ast.alias):
            yield node.asname or node.name.split(".")[-1]


def test_no_module_outside_policies_names_a_concrete_model_class():
    """Tools use the policy interface (``policies.SnapFlowPolicy``, ``load_policy``, ``wrap``):
    adding a model must not touch distill, eval, bench, the node or the apps (DESIGN §3)."""
    named = {f"{p.relative_to(PKG)}: {name}" for p in sorted(PKG.rglob("*.py"))
             if "policies" not in p.relative_to(PKG).parts
             for name in _names(p) if CONCRETE_MODEL.match(name)}
    assert not named, sorted(named)
    # the check itself sees a concrete name where one is used
    assert CONCRETE_MODEL.match("SnapFlowSmolVLA") and CONCRETE_MODEL.match("SmolVLAPolicy")
    assert not CONCRETE_MODEL.match("SnapFlowPolicy")
