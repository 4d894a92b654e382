"""Between freeze and materialize: BatchNorm statistics re-estimated for the chosen subnet.

``bn`` (``recalibrate_bn``, ``CalibrationInfo``), ``data`` (reading calibration inputs).
"""
