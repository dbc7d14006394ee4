"""The CLI on every source: build (workers, --limit, --skip-bad, errors) and stats."""

from __future__ import annotations

import json
import re

import pytest
from mrseg_data import SOURCE_DIRS, TINY_SAM, write_all

from segllm_training.mrseg.cli import main
from segllm_training.mrseg.schema import read_conversations


def build_args(source, root, split, out, *extra) -> list[str]:
    """``build`` arguments; extras may be paths."""
    return [
        "build",
        "--source",
        source,
        "--root",
        str(root),
        "--split",
        split,
        "--out",
        str(out),
        *map(str, extra),
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("mrseg"))


def test_build_every_source_then_stats(data, tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"sam_config": TINY_SAM}))
    files = []
    for source, folder in sorted(SOURCE_DIRS.items()):
        out = tmp_path / f"{source}.jsonl"
        args = build_args(
            source,
            data / folder,
            "train",
            out,
            "--workers",
            "2",
            "--config",
            config,
            "--allow-random-sam",  # visual_genome: no SAM checkpoint here
        )
        assert main(args) == 0
        assert read_conversations(out)
        files.append(str(out))
    capsys.readouterr()
    plot = tmp_path / "rounds.png"
    assert main(["stats", *files, "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert plot.stat().st_size > 1000
    for source in SOURCE_DIRS:
        row = re.search(
            rf"^\| {re.escape(source)} \| train \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", text, re.M
        )
        assert row, source
        convs, images, max_rounds, limit = map(int, row.groups())
        assert convs >= 1 and 1 <= images <= convs * 20 and 1 <= max_rounds <= limit
    assert "**total**" in text


def test_limit_and_seed(data, tmp_path, capsys):
    out = tmp_path / "lvis.jsonl"
    assert main(build_args("lvis", data / "lvis", "val", out, "--limit", "2", "--no-progress")) == 0
    assert "from 2 images" in capsys.readouterr().out
    assert {r.split for r in read_conversations(out)} == {"val"}


def test_bad_input_exits_2_naming_file_and_record(data, tmp_path, capsys):
    bad = tmp_path / "lvis"
    bad.mkdir()
    doc = json.loads((data / "lvis" / "lvis_v1_train.json").read_text())
    doc["annotations"][3]["category_id"] = 999
    (bad / "lvis_v1_train.json").write_text(json.dumps(doc))
    args = build_args("lvis", bad, "train", tmp_path / "o.jsonl", "--no-progress")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "lvis_v1_train.json [annotations[3] id=" in err and "unknown category_id 999" in err
    assert main([*args, "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped:" in captured.err and "(1 skipped)" in captured.out
    assert main(build_args("lvis", tmp_path / "none", "train", tmp_path / "o.jsonl")) == 2
    assert "file not found" in capsys.readouterr().err


def test_stats_reports_broken_lines(data, tmp_path, capsys):
    out = tmp_path / "a.jsonl"
    main(build_args("reasonseg", data / "reasonseg", "val", out, "--no-progress"))
    with out.open("a") as f:
        f.write('{"id": "broken"\n')
    capsys.readouterr()
    assert main(["stats", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    assert re.search(r"\| broken lines \| .*a\.jsonl \| 1 \|", capsys.readouterr().out)
