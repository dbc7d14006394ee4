"""Issue 20: the image encoders and the mask decoder compiled (``compile_graphs``) give the
same rounds as eager, are compiled at configure so that no round compiles anything, report
their configure-time cost, and come from the on-disk cache after a restart (torch inductor on
a CPU here; a GPU runs the same code with the CUDA modes of ``runtime.compiled``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import DEMO_MODEL
from torch._dynamo.utils import counters
from train_helpers import env

from segllm_ros.engine.engine import SegLLMEngine, load_engine
from segllm_ros.engine.history import Frame
from segllm_ros.interface.mask_codec import mask_iou
from segllm_ros.runtime.compiled import GRAPHS
from segllm_ros.runtime.registry import load_runtime
from segllm_ros.runtime.torch_runtime import TorchRuntime
from segllm_training.tabletop import TabletopConfig, generate_dataset

# A restart: a new process loads the runtime with the same cache folder.
RESTART = """
import json, sys
from dataclasses import asdict
from segllm_ros.runtime.registry import load_runtime
rt = load_runtime(sys.argv[1], compile_graphs=True, compile_cache_dir=sys.argv[2])
print(json.dumps({k: asdict(v) for k, v in rt.compile_report.graphs.items()}))
"""


@pytest.fixture(scope="module")
def conversation():
    """Three rounds on one table, at least one referring to an earlier round (so the mask
    decoder runs with and without referenced masks)."""
    cfg = TabletopConfig(min_rounds=3, max_rounds=3)
    return next(
        c
        for c in generate_dataset(5, 40, cfg)
        if len(c.rounds) == 3 and any(r.ref_rounds for r in c.rounds)
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """An engine with compiled graphs and an empty cache folder of its own."""
    cache = tmp_path_factory.mktemp("compile_cache")
    return load_engine(str(DEMO_MODEL), compile_graphs=True, compile_cache_dir=str(cache)), cache


def play(engine: SegLLMEngine, conv) -> list:
    frame = Frame.create(conv.scene.image, 1, "table")
    return [engine.segment("c", r.query, frame, r.ref_rounds) for r in conv.rounds]


def compilations() -> int:
    """Graphs inductor has compiled or fetched from its cache in this process so far."""
    inductor = counters["inductor"]
    return sum(inductor[f"fxgraph_cache_{k}"] for k in ("hit", "miss", "bypass"))


def test_compile_graphs_rounds_equal_eager_and_compile_nothing(model, compiled, conversation):
    engine, _ = compiled
    before = compilations()
    rounds = play(engine, conversation)
    assert compilations() == before  # warmed up at configure with the engine's shapes
    eager = play(SegLLMEngine(TorchRuntime(model)), conversation)
    for x, y in zip(eager, rounds, strict=True):
        assert (x.ref_rounds, x.text, x.kind) == (y.ref_rounds, y.text, y.kind)
        assert [s.score for s in x.segments] == pytest.approx(
            [s.score for s in y.segments], abs=1e-4
        )
        assert mask_iou(x.mask, y.mask) >= 0.99 or not (x.mask.any() or y.mask.any())
    assert any(r.mask.any() for r in rounds)


def test_compile_graphs_report_lists_the_graphs(compiled):
    report = compiled[0].runtime.compile_report
    assert set(report.graphs) == set(GRAPHS)
    assert all(g.seconds > 0 and g.cache_misses > 0 for g in report.graphs.values())
    assert not report.cache_hit  # an empty folder: everything compiled afresh
    assert report.cache_dir == str(compiled[1])
    assert all(name in report.summary() for name in GRAPHS)


def test_compile_graphs_cache_hit_after_restart(compiled):
    _, cache = compiled
    out = subprocess.run(
        [sys.executable, "-c", RESTART, str(DEMO_MODEL), str(cache)],
        env={**env(), "OMP_NUM_THREADS": str(torch.get_num_threads())},  # part of the key
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    graphs = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(graphs) == set(GRAPHS)
    for name, g in graphs.items():
        assert g["cache_hits"] > 0 and g["cache_misses"] == 0, (name, g)


def test_compile_graphs_is_a_torch_option():
    with pytest.raises(ValueError, match="no option compile_graphs"):
        load_runtime(str(DEMO_MODEL), backend="onnxruntime", compile_graphs=True)
    assert load_runtime(str(DEMO_MODEL)).compile_report is None  # off by default
