"""Stage 3, export: the plain model as one clean, checked ONNX file.

``exporter`` (``export_onnx``, ``ExportResult``), ``passes`` (graph clean-up passes with checked
contracts), ``graph`` (facts read off an ONNX graph: IO signature, opset, operators; onnx only,
no torch, so the bundle side reads them too).
"""
