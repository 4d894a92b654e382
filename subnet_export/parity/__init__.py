"""Stage 4, validate: the parity report of the ONNX file against the supernet path.

``rule`` (the verdict rule), ``comparison`` (per-set figures), ``report`` (``ParityReport`` and its
parts), ``record`` (what the bundle side reads of a recorded report): numpy or stdlib only.
``inputs`` (the input sets), ``backends`` (torch and onnxruntime candidates), ``locate`` and
``blame`` (the module where the error enters), ``validate`` (the stage).
"""
