"""Stage 2, materialize: the plain ``nn.Module`` of one arch, and the modules it may hold.

``materialize`` (the stage), ``modules`` (``ChosenEdges``, ``SelectInputs``, ``LearnedTensor``,
``Zero``: plain modules a subnet holds besides torch.nn's).
"""
