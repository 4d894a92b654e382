"""Stage 3, export: the plain model as one clean, checked ONNX file.

``exporter`` (``export_onnx``, ``ExportResult``); ``trace`` (torch.onnx, quietly: ``capture``
keeps what the exporter prints off the terminal, ``dynamic`` turns dynamic axes into each
exporter's form); ``diagnose`` (the opsets each exporter writes, and why an export failed, in one
line: ``op_site`` finds the module an op ran in, ``translations`` asks the exporters' registries);
``passes`` (graph clean-up passes with checked contracts) and ``naming`` (nodes named by module
path, e.g. ``blocks.1.dw/Conv``); ``graph`` (facts read off an ONNX graph: IO signature, opset,
operators; onnx only, no torch, so the bundle side reads them too).
"""
