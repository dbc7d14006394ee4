"""Packaging: the package builds and installs as a ROS 2 package, and its files agree.

* a colcon workspace build (the way a ROS user builds it) installs a complete ROS package;
* ``make install`` (pip + scikit-build-core) put the same layout into this environment;
* config/segllm.yaml, the launch file and the status enums agree with the code and messages.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import yaml

from segllm_ros.engine.worker import ImagePolicy, Status
from segllm_ros.msg import SegmentationQuery, SegmentationResult
from segllm_ros.node.params import NodeParams

ROOT = Path(__file__).resolve().parents[1]
PKG = "segllm_ros"
PY_DIR = Path("lib") / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
# Folders that are build outputs or environments, never sources (used when git is unavailable).
NOT_SOURCES = {".git", ".venv", "build", "install", "log", "runs", "demo_out", "__pycache__",
               ".pytest_cache", ".ruff_cache"}


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _source_files() -> list[Path]:
    """The package's files: what git tracks (plus new files not ignored) and models/ + data/."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        names = {Path(n) for n in out.decode().split("\0") if n}
    except (OSError, subprocess.CalledProcessError):
        names = {p.relative_to(ROOT) for p in ROOT.rglob("*")
                 if p.is_file() and not NOT_SOURCES & set(p.relative_to(ROOT).parts)}
    for folder in ("models", "data"):  # the install rules need them (bundled demo model)
        names |= {p.relative_to(ROOT) for p in (ROOT / folder).rglob("*") if p.is_file()}
    return sorted(n for n in names if (ROOT / n).is_file())


def _copy_sources(dest: Path) -> None:
    for name in _source_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)


# Runs in the overlay environment (install/local_setup.sh sourced), from a folder outside the
# repository: everything segllm must come from the colcon install, libraries included.
OVERLAY_CHECK = textwrap.dedent("""
    import sys
    from pathlib import Path

    from ament_index_python.packages import get_package_prefix, get_package_share_directory
    from rclpy.serialization import deserialize_message, serialize_message

    import segllm_ros
    import segllm_training.tabletop
    from segllm_ros.action import Segment
    from segllm_ros.msg import SegmentationQuery, SegmentationResult
    from segllm_ros.srv import ResetConversation

    prefix = Path(sys.argv[1]).resolve()
    msg = SegmentationQuery(text="the red mug", image_policy=SegmentationQuery.IMAGE_PINNED)
    back = deserialize_message(serialize_message(msg), SegmentationQuery)
    assert back.text == "the red mug" and back.image_policy == 2, back
    serialize_message(SegmentationResult(status=SegmentationResult.STATUS_NOT_FOUND))
    ResetConversation.Request(), Segment.Goal()

    def inside(path):
        return Path(path).resolve().is_relative_to(prefix)

    import segllm_ros.msg
    for module in (segllm_ros, segllm_ros.msg, segllm_training.tabletop):
        assert inside(module.__file__), (module.__name__, module.__file__)
    assert inside(get_package_prefix("segllm_ros")), get_package_prefix("segllm_ros")
    assert inside(get_package_share_directory("segllm_ros"))
    maps = Path("/proc/self/maps").read_text().split()
    libs = {word for word in maps if "segllm_ros" in word and word.endswith(".so")}
    assert libs, "no segllm_ros library loaded"
    assert all(inside(lib) for lib in libs), sorted(libs)
    print("overlay ok")
""")


def test_colcon_build_installs_a_ros_package(tmp_path):
    # About 45 s on 2 CPU cores (configure, rosidl generation, C compile of the interfaces).
    colcon = Path(sys.executable).parent / "colcon"
    assert colcon.exists(), f"colcon_core is importable but {colcon} is missing"

    ws = tmp_path / "ws"
    _copy_sources(ws / "src" / PKG)
    env = os.environ.copy()
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(colcon), "--log-base", str(ws / "log"), "build",
           "--base-paths", str(ws / "src"),
           "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
           # console_direct: the build's own output (captured), so a failure's tail (shown
           # below) holds the compiler/CMake error. colcon-core ships this handler.
           "--event-handlers", "console_direct+",
           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}"]
    run = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, f"colcon build failed:\n{_tail(run.stdout + run.stderr)}"

    prefix = ws / "install" / PKG
    site = prefix / PY_DIR
    share = prefix / "share" / PKG
    assert (site / PKG / "msg" / "__init__.py").is_file()
    assert (site / PKG / "srv" / "__init__.py").is_file()
    assert (site / PKG / "action" / "__init__.py").is_file()
    # Our __init__.py (extend_path) replaced rosidl's empty one; our modules sit beside msg/.
    assert (site / PKG / "__init__.py").read_bytes() == (ROOT / PKG / "__init__.py").read_bytes()
    assert (site / PKG / "node" / "segllm_node.py").is_file()
    assert (site / "segllm_training" / "tabletop" / "scenes.py").is_file()
    node = prefix / "lib" / PKG / "segllm_node"
    assert node.is_file() and os.access(node, os.X_OK)
    for name in ("launch/segllm.launch.py", "config/segllm.yaml", "package.xml",
                 "models/demo/model.safetensors", "data/demo/demo.json",
                 "msg/SegmentationQuery.msg"):
        assert (share / name).is_file(), name
    index = prefix / "share" / "ament_index" / "resource_index"
    assert (index / "packages" / PKG).is_file()  # what `ros2 run` / FindPackageShare look up
    assert (index / "rosidl_interfaces" / PKG).is_file()

    # Use the overlay as a ROS user would: source install/local_setup.sh, then import.
    # ros_wheels_bootstrapper (the PyPI ROS wheels' .pth hook) re-executes Python with
    # LD_LIBRARY_PATH rebuilt from a set, i.e. in random order, which would let this
    # environment's own libsegllm_ros__*.so (from `make install`) shadow the overlay's now and
    # then. This process already went through it, so the child inherits its guard variable
    # and library path, and local_setup.sh prepends the overlay's lib/ deterministically.
    script = tmp_path / "overlay_check.py"
    script.write_text(OVERLAY_CHECK)
    check = subprocess.run(
        ["bash", "-c", '. "$1/local_setup.sh" && exec "$2" "$3" "$4"', "bash",
         str(ws / "install"), sys.executable, str(script), str(prefix)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, _tail(check.stdout + check.stderr)
    assert "overlay ok" in check.stdout


def test_pip_install_layout(tmp_path):
    prefix = Path(sys.prefix)
    node = prefix / "lib" / PKG / "segllm_node"
    assert node.is_file() and os.access(node, os.X_OK), f"{node}: run `make install`"
    share = prefix / "share" / PKG
    for name in ("launch/segllm.launch.py", "config/segllm.yaml", "package.xml"):
        assert (share / name).is_file(), name

    # A fresh interpreter outside the repository must find the installed packages only.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = textwrap.dedent("""
        import segllm_ros, segllm_ros.msg, segllm_training, segllm_training.tabletop
        for m in (segllm_ros, segllm_ros.msg, segllm_training):
            print(m.__file__)
        try:
            import training
        except ImportError:
            print("no training")
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    *files, last = run.stdout.splitlines()
    assert last == "no training"
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for name in files:
        assert Path(name).resolve().is_relative_to(site), name
    assert "extend_path" in (site / PKG / "__init__.py").read_text()


def test_node_parameters_yaml_matches_the_dataclass():
    data = yaml.safe_load((ROOT / "config" / "segllm.yaml").read_text())
    in_yaml = data["/**"]["ros__parameters"]
    in_code = {name: default for name, default, _, _ in NodeParams.describe()}
    assert in_yaml == in_code
    # Same types too: ROS refuses e.g. an integer for a double parameter.
    assert {k: type(v) for k, v in in_yaml.items()} == {k: type(v) for k, v in in_code.items()}


def _const(node: ast.AST):
    return node.value if isinstance(node, ast.Constant) else None


def test_launch_file_declares_the_usual_arguments():
    tree = ast.parse((ROOT / "launch" / "segllm.launch.py").read_text())
    arguments = next(node.value for node in ast.walk(tree)
                     if isinstance(node, ast.Assign)
                     and any(isinstance(t, ast.Name) and t.id == "ARGUMENTS"
                             for t in node.targets))
    assert isinstance(arguments, ast.Dict)
    keys = {_const(k) for k in arguments.keys}
    assert {"namespace", "image_topic", "image_transport", "params_file", "model_path",
            "backend", "device", "precision"} <= keys

    nodes = [{kw.arg: _const(kw.value) for kw in node.keywords}
             for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id == "Node"]
    assert any(n.get("package") == PKG and n.get("executable") == "segllm_node"
               and n.get("name") == "segllm" for n in nodes), nodes


def _constants(msg_class, prefix: str) -> dict[str, int]:
    # rosidl puts message constants into the class namespace (Metaclass.__prepare__).
    return {name.removeprefix(prefix): value for name, value in vars(msg_class).items()
            if name.startswith(prefix)}


def test_status_constants_mirror_the_message():
    assert {m.name: m.value for m in Status} == _constants(SegmentationResult, "STATUS_")
    assert {m.name: m.value for m in ImagePolicy} == _constants(SegmentationQuery, "IMAGE_")
