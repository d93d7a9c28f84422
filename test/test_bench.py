# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`seg-perception bench` in one process: the naive reference gives the model's labels, every stage is timed,
stamps survive restamping, and the Markdown document renders (the DDS part is exercised by running the bench).
"""
from __future__ import annotations

import numpy as np
import pytest

from seg_perception.benchmark import report
from seg_perception.benchmark.measure import BenchError, parse_counts, parse_resolutions, sample_frames, summary


@pytest.fixture(scope="module")
def frames():
    return sample_frames((480, 360), limit=2)


def test_naive_pipeline_gives_the_models_labels(frames):
    """The reference is slow by design, never wrong: at the model's own size its labels are the fp32 model's."""
    from seg_perception.benchmark.naive import NaivePipeline, imgmsg_to_array
    from seg_perception.inference.segmenter import Segmenter
    from seg_perception.ros.ros_image import rgb_to_image
    naive = NaivePipeline("driving")
    seg = Segmenter("driving", backend="onnxruntime", precision="fp32", input_size="model")
    for rgb in frames:
        msg = rgb_to_image(rgb, "rgb8")
        assert np.array_equal(imgmsg_to_array(msg), rgb)
        out = naive(msg)
        assert set(out) == {"labels", "drivable_mask", "obstacle_mask", "confidence", "overlay"}
        labels = np.frombuffer(out["labels"].data, np.uint8).reshape(rgb.shape[:2])
        assert np.mean(labels == seg.segment(rgb).labels) > 0.99
        assert out["overlay"].encoding == "rgb8" and len(out["overlay"].data) == rgb.size


def test_every_stage_is_timed(frames):
    from seg_perception.benchmark.naive import NaivePipeline
    from seg_perception.benchmark.stages import Backend, batch_rows, stage_table
    from seg_perception.inference.segmenter import Segmenter
    seg = Segmenter("driving", backend="onnxruntime", precision="fp32", max_batch=2)
    small = [np.ascontiguousarray(f[::2, ::2]) for f in frames]  # 240x180: cheap
    t = stage_table(small, seg, NaivePipeline("driving"), repeats=1)
    assert t["resolution"] == [240, 180] and t["naive_size"] == [480, 360]
    names = [r["stage"] for r in t["rows"]]
    assert any(n.startswith("inference") for n in names) and any(n.startswith("whole frame") for n in names)
    for r in t["rows"]:
        for side in ("node", "naive"):
            if r[side] is not None:
                assert r[side]["n"] == len(small) and r[side]["p50"] > 0 and r[side]["p99"] >= r[side]["p50"]
    rows = batch_rows(small, Backend(seg.provider, seg, True), [1, 2], repeats=1)
    assert [r["cameras"] for r in rows] == [1, 2] and rows[1]["batch_ms"]["n"] == 1
    assert "(node default)" in report.backend_line(rows[0], {(240, 180): 10.0})
    assert report.stage_lines(t)[0] == report.STAGE_HEADER and len(report.stage_lines(t)) == len(names) + 1


def test_restamped_frames_carry_the_new_stamp():
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from seg_perception.benchmark.end_to_end import _stamp_of, restamped
    from seg_perception.ros.ros_image import rgb_to_image
    cdr = serialize_message(rgb_to_image(np.full((4, 6, 3), 7, np.uint8), "rgb8"))
    stamp = 1_790_000_000_123_456_789
    out = restamped(cdr, stamp)
    assert _stamp_of(out) == stamp
    msg = deserialize_message(out, Image)
    assert (msg.width, msg.height, bytes(msg.data)) == (6, 4, bytes([7]) * 72)


def test_node_and_naive_commands():
    from seg_perception.benchmark.end_to_end import naive_pipeline, node_pipeline
    one, two = node_pipeline(1), node_pipeline(2)
    assert "image:=/cam0/image_raw" in one.commands[0] and one.outputs[0]["labels"] == "/segmentation/labels"
    assert "cameras:=['/cam0/image_raw','/cam1/image_raw']" in two.commands[0]
    assert two.outputs[1]["labels"] == "/cam1/segmentation/labels"
    naive = naive_pipeline(2)
    assert len(naive.commands) == 2 and naive.outputs[1]["overlay"] == "/naive1/overlay"


def test_options_are_checked():
    assert parse_resolutions("480x360, 1280X720") == [(480, 360), (1280, 720)]
    assert parse_counts("1,2,4") == [1, 2, 4]
    for bad in ("480", "0x10", "axb"):
        with pytest.raises(BenchError):
            parse_resolutions(bad)
    with pytest.raises(BenchError):
        parse_counts("0,2")


def test_document_has_the_machine_the_ratios_and_the_notes():
    from seg_perception.benchmark.measure import machine
    lat = summary([40.0, 50.0, 60.0])
    common = dict(subscribed="labels", resolution=[1280, 720], cameras=1, rate=30.0, seconds=10.0, sent=300,
                  sent_per_s=30.0, cpu_cores=1.5, bench_cpu_cores=0.2, note=None)
    rows = [dict(common, pipeline="naive", answered=100, answered_fraction=1 / 3, outputs_per_s=10.0,
                 latency_ms=summary([120.0, 150.0])),
            dict(common, pipeline="node", answered=300, answered_fraction=1.0, outputs_per_s=30.0, latency_ms=lat),
            dict(pipeline="node", subscribed="labels", resolution=[1280, 720], cameras=2, note="no cameras")]
    res = {"machine": machine(), "settings": {"command": "seg-perception bench --quick", "rate": 30.0,
                                              "seconds": 10.0},
           "notes": [], "stages": [], "backends": [], "end_to_end": rows, "wall_s": 120.0}
    doc = report.document(res)
    assert doc.startswith("# Performance") and res["machine"]["cpu"] in doc
    assert ("| node | labels only | 1280x720 | 1 | 30.0 | 30.0 | 100 % | 50.0 / 59.0 / 59.8 | 1.50 | 3.0× | 2.7× |"
            in doc)
    assert "not measured: note 1" in doc and "1. no cameras" in doc
