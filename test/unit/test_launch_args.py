"""The launch file's rules, without ``launch``: params_file is the configuration, and a launch
argument changes the node only when it is given (test_launch.py runs the real launch file)."""

from __future__ import annotations

import pytest

from segllm_ros.launch_args import (
    ARGUMENTS,
    OVERRIDES,
    PARAMS_FILE,
    node_arguments,
    parameter_overrides,
    ros_arguments,
)
from segllm_ros.node.params import NodeParams

DEFAULTS = {name: default for name, (default, _) in ARGUMENTS.items() if default is not None}


def test_declared_defaults_override_nothing_in_params_file():
    # Before: seven arguments with defaults such as device=cpu were always passed after the
    # file, so a robot YAML's `device: cuda:0` was silently replaced.
    assert parameter_overrides(DEFAULTS) == {}
    assert node_arguments(DEFAULTS) == [] and ros_arguments(DEFAULTS) == []


def test_only_given_arguments_become_parameters_typed():
    given = {**DEFAULTS, "device": "cuda:0", "use_sim_time": "True", "mode": "recompute"}
    assert parameter_overrides(given) == {
        "device": "cuda:0",
        "use_sim_time": True,
        "mode": "recompute",
    }
    assert parameter_overrides({"use_sim_time": "false"}) == {"use_sim_time": False}


def test_autostart_and_log_level():
    assert node_arguments({"autostart": "false"}) == ["--no-autostart"]
    assert node_arguments({"autostart": "true"}) == []
    assert ros_arguments({"log_level": "DEBUG"}) == ["--log-level", "debug"]


@pytest.mark.parametrize(
    ("rule", "name", "value"),
    [
        (parameter_overrides, "use_sim_time", "yes please"),
        (node_arguments, "autostart", "maybe"),
        (ros_arguments, "log_level", "loud"),
    ],
)
def test_bad_values_are_refused_with_the_argument_name(rule, name, value):
    with pytest.raises(ValueError, match=name):
        rule({name: value})


def test_arguments_name_real_parameters():
    assert {"use_sim_time", "log_level", "autostart", PARAMS_FILE} <= set(ARGUMENTS)
    assert set(OVERRIDES) <= set(ARGUMENTS)
    node_params = {name for name, *_ in NodeParams.describe()}
    assert set(OVERRIDES) - {"use_sim_time"} <= node_params  # use_sim_time: every ROS node's


def test_llm_options_are_overrides_only_when_given():
    assert parameter_overrides(
        {"llm_graphs": "true", "llm_quant": "int8", "compile_graphs": "false"}
    ) == {"llm_graphs": True, "llm_quant": "int8", "compile_graphs": False}
    assert "llm_quant" not in parameter_overrides({"llm_quant": ""})
