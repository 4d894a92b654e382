"""Stage 4, validate: the parity report of the ONNX file against the supernet path.

``rule`` (the verdict rule; numpy only), ``report`` (``ParityReport`` and its parts; numpy only),
``inputs`` (the input sets), ``backends`` (torch and onnxruntime candidates), ``locate`` (the
first diverging module), ``validate`` (the stage).
"""
