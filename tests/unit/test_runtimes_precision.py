"""Runtimes whose default precision depends on the CPU are pinned to f32, so results do not depend on the machine."""
from __future__ import annotations

import pytest


def test_openvino_compiles_the_detector_in_f32(tmp_path):
    ov = pytest.importorskip("openvino")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from clip_embedder.models.runtimes import open_session

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    compiled = open_session("openvino", path)
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
