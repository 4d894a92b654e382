"""The supernet side: the one-shot module contract, tree walkers and state, supernet modules.

``base`` (the contract), ``walk`` (modules, search space, sub state dict, plain skeleton of a
tree), ``attrs`` (choices kept as attributes), ``state`` (the arch a tree is on), ``elastic``,
``norm``, ``attention`` (elastic layers), ``choices`` (layer, input and edge choices),
``repeat`` (elastic depth), ``weighted`` (the mixture's weighted sum), ``convert``
(``to_supernet``).
"""
