"""Edge variants of an exported model: FP16 and INT8, judged by statistical parity.

``stats`` (the statistics and limits), ``convert`` (onnxruntime's converters), ``sensitivity``
(per-layer), ``build`` (``make_variants``), ``ort_format`` (minimal-build files), ``stage`` (the
pipeline's data; the one module here that needs torch).
"""
