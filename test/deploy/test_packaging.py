"""Packaging: the package builds and installs as a ROS 2 package, and its files agree.

* a colcon workspace build (the way a ROS user builds it) installs a complete ROS package;
* ``make install`` (pip + scikit-build-core) put the same layout into this environment;
* config/segllm.yaml, the launch file and the status enums agree with the code and messages.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import yaml

from segllm_ros.engine.answers import ANSWER_KINDS
from segllm_ros.engine.worker import ImagePolicy, Status
from segllm_ros.launch_args import OVERRIDES
from segllm_ros.msg import SegmentationQuery, SegmentationResult
from segllm_ros.node.params import NodeParams

ROOT = Path(__file__).resolve().parents[2]
PKG = "segllm_ros"
PY_DIR = Path("lib") / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
# Folders that are build outputs or environments, never sources (used when git is unavailable).
NOT_SOURCES = {
    ".git",
    ".venv",
    "build",
    "install",
    "log",
    "runs",
    "demo_out",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
}


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _source_files() -> list[Path]:
    """The package's files: what git tracks (plus new files not ignored) and models/ + data/."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        names = {Path(n) for n in out.decode().split("\0") if n}
    except (OSError, subprocess.CalledProcessError):
        names = {
            p.relative_to(ROOT)
            for p in ROOT.rglob("*")
            if p.is_file() and not NOT_SOURCES & set(p.relative_to(ROOT).parts)
        }
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
    cmd = [
        str(colcon),
        "--log-base",
        str(ws / "log"),
        "build",
        "--base-paths",
        str(ws / "src"),
        "--build-base",
        str(ws / "build"),
        "--install-base",
        str(ws / "install"),
        # console_direct: the build's own output (captured), so a failure's tail (shown
        # below) holds the compiler/CMake error. colcon-core ships this handler.
        "--event-handlers",
        "console_direct+",
        "--cmake-args",
        f"-DPython3_EXECUTABLE={sys.executable}",
    ]
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
    for name in (
        "launch/segllm.launch.py",
        "config/segllm.yaml",
        "package.xml",
        "models/demo/model.safetensors",
        "data/demo/demo.json",
        "msg/SegmentationQuery.msg",
    ):
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
        [
            "bash",
            "-c",
            '. "$1/local_setup.sh" && exec "$2" "$3" "$4"',
            "bash",
            str(ws / "install"),
            sys.executable,
            str(script),
            str(prefix),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
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
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
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


def test_launch_file_takes_its_arguments_and_rules_from_launch_args():
    """The launch file cannot run here (no launch_ros wheel; test_launch.py runs it where it
    can), so check its shape: every argument comes from launch_args.ARGUMENTS, and the node's
    parameters, arguments and ROS arguments come from launch_args' functions, which
    test_launch_args.py checks. A key written into the file itself could override params_file
    unconditionally again, so none of the overridable names may appear in it."""
    tree = ast.parse((ROOT / "launch" / "segllm.launch.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "segllm_ros.launch_args"
        for alias in node.names
    }
    assert {"ARGUMENTS", "parameter_overrides", "node_arguments", "ros_arguments"} <= imported
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert {
        "parameter_overrides",
        "node_arguments",
        "ros_arguments",
        "DeclareLaunchArgument",
        "OpaqueFunction",
    } <= called
    strings = {_const(node) for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert not strings & set(OVERRIDES), strings & set(OVERRIDES)

    nodes = [
        {kw.arg: _const(kw.value) for kw in node.keywords}
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Node"
    ]
    assert any(
        n.get("package") == PKG
        and n.get("executable") == "segllm_node"
        and n.get("name") == "segllm"
        for n in nodes
    ), nodes
    assert {"parameters", "arguments", "ros_arguments"} <= set(nodes[0]), nodes


# Each third-party module segllm_ros (node, engine, model, launch file) imports, and how a robot
# gets it: a rosdep key in package.xml, or requirements.txt where no rosdep key exists.
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "torch": "python3-torch",
    "transformers": "python3-transformers-pip",
    "tokenizers": "python3-transformers-pip",  # a dependency of transformers
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "lifecycle_msgs": "lifecycle_msgs",
    "action_msgs": "action_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "ament_index_python": "ament_index_python",
    "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs",
    "sensor_msgs": "sensor_msgs",
    "launch": "launch",
    "launch_ros": "launch_ros",
}
PIP_ONLY = {
    "safetensors": "safetensors",
    "segment_anything": "segment-anything",
    "pycocotools": "pycocotools",
}
# export tool, optional backends and llm_quant (README, requirements.txt)
OPTIONAL = {"onnx", "onnxruntime", "tensorrt", "torchao"}


def _third_party_imports() -> set[str]:
    files = [*(ROOT / PKG).rglob("*.py"), *(ROOT / "launch").glob("*.py")]
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != PKG}


def _requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_package_xml_declares_every_runtime_import_with_a_rosdep_key():
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    declared = {e.text for tag in ("depend", "exec_depend") for e in root.iter(tag)}
    imports = _third_party_imports()
    unknown = imports - set(ROSDEP_KEYS) - set(PIP_ONLY) - OPTIONAL
    assert not unknown, f"decide how a robot installs {unknown} (package.xml or requirements)"
    missing = {ROSDEP_KEYS[n] for n in imports & set(ROSDEP_KEYS)} - declared
    assert not missing, missing
    assert {
        "action_msgs",
        "rcl_interfaces",
        "ament_index_python",
        "lifecycle_msgs",
        "diagnostic_msgs",
    } <= declared
    assert "cv_bridge" not in declared  # images are converted with NumPy
    # Keys that rosdep no longer resolves or never had
    assert not declared & {
        "python3-pytorch-pip",
        "python3-pycocotools",
        "python3-safetensors-pip",
    }, declared
    runtime = {line.split("==")[0].split(">=")[0] for line in _requirements("requirements.txt")}
    assert set(PIP_ONLY.values()) <= runtime, runtime


def test_runtime_requirements_install_no_ros_and_no_pinned_torch():
    runtime = _requirements("requirements.txt")
    assert not [r for r in runtime if r.startswith("ros-") or r.startswith("-r")], runtime
    assert "torch" in runtime  # unpinned: CUDA builds on robots, JetPack's on a Jetson
    dev = _requirements("requirements-dev.txt")
    assert "-r requirements.txt" in dev and "torch==2.13.0" in dev
    assert any(r.startswith("ros-rclpy") for r in dev)
    # `pip install .` on a robot must not ask for the CPU build either
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch"' in pyproject and "torch==" not in pyproject


def test_dockerfiles_install_the_runtime_requirements_only():
    for name in ("jetson.Dockerfile", "x86-cuda.Dockerfile"):
        text = (ROOT / "docker" / name).read_text()
        assert "requirements-dev" not in text, name
        assert re.search(r"pip3? install [^\n]*-r \S*requirements\.txt", text), name
        assert re.search(r"COPY requirements\.txt ", text), name
        assert "rosdep install" in text and "colcon build" in text, name
        assert not re.search(r"torch==\d", text), name  # no pin fighting the base image
    jetson = (ROOT / "docker" / "jetson.Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/l4t-jetpack:${L4T_TAG}" in jetson and "L4T_TAG=r36" in jetson
    assert "PIP_CONSTRAINT" in jetson  # keeps JetPack's torch through requirements.txt


def _configure_runs_the_prefix_lookup(tmp_path: Path, env: dict[str, str]) -> bool:
    """Configure with --trace-expand; whether the interpreter was asked for the wheel prefix."""
    build = tmp_path / "build"
    run = subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build),
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DBUILD_TESTING=OFF",
            "--trace-expand",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, _tail(run.stdout + run.stderr)
    shutil.rmtree(build)
    return "import ament_package" in run.stderr


def test_cmake_asks_for_the_wheel_prefix_only_without_a_sourced_ros(tmp_path):
    # About 10 s per configure (rosidl generates its CMake code at configure time).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH")
    }
    assert _configure_runs_the_prefix_lookup(tmp_path, env)
    # What `source /opt/ros/<distro>/setup.bash` provides: both paths name the ROS prefix.
    sourced = dict(env, AMENT_PREFIX_PATH=sys.prefix, CMAKE_PREFIX_PATH=sys.prefix)
    assert not _configure_runs_the_prefix_lookup(tmp_path, sourced)


def _constants(msg_class, prefix: str) -> dict[str, int | str]:
    # rosidl puts message constants into the class namespace (Metaclass.__prepare__).
    return {
        name.removeprefix(prefix): value
        for name, value in vars(msg_class).items()
        if name.startswith(prefix)
    }


def test_status_constants_mirror_the_message():
    assert {m.name: m.value for m in Status} == _constants(SegmentationResult, "STATUS_")
    assert {m.name: m.value for m in ImagePolicy} == _constants(SegmentationQuery, "IMAGE_")


def test_answer_kind_constants_mirror_the_engine():
    assert _constants(SegmentationResult, "KIND_") == {k.upper(): k for k in ANSWER_KINDS}
