"""What a user writes: choices with their arithmetic, parameter specs, search-space placeholders.

``choice`` (``Choice``, ``compose``, ``evaluate``), ``spec`` (``ParameterSpec``), ``placeholders``
(``se.Conv2d``, ``se.LayerChoice``, ...). ``se.to_supernet`` turns a space into a supernet.
"""
