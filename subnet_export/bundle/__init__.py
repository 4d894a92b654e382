"""Stage 5, bundle: the deployment directory, and everything that reads it. Imports no torch.

``layout`` (file names and defaults, in one place), ``write`` (``write_bundle``), ``atomic``,
``hashing``, ``manifest``, ``samples``, ``integrity``; readers: ``verify`` (``verify_bundle``),
``gate`` (``gate``), ``budget``, ``latency``. An edge machine needs onnx, onnxruntime and numpy.
"""
