"""Once-for-All's own export route, as an OFA user writes it; ``bench/bench_ofa.py`` runs it.

``python bench/ofa_route.py CHECKPOINT ARCH_JSON OUT_ONNX EXPORTER``: build OFA's MobileNetV3
w1.0, load the checkpoint (``{"state_dict": ...}``), take the arch dict's subnet with
``get_active_subnet(preserve_weight=True)`` and ``torch.onnx.export`` it with torch's defaults
(``dynamo=True`` or ``False``). Prints its stage timings as JSON on stdout; the process's own
start is timed by the caller.
"""

import time

START = time.perf_counter()

import contextlib  # noqa: E402 - the imports are part of what is timed
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

import torch  # noqa: E402

# ofa.utils imports its ImageNet data loaders (torchvision, PIL), which the networks never use.
sys.modules.setdefault("ofa.utils.my_dataloader", types.ModuleType("ofa.utils.my_dataloader"))
from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3  # noqa: E402


def main(checkpoint: str, arch_file: str, out: str, exporter: str) -> dict:
    """OFA's route; returns seconds per step (imports measured from the module's start)."""
    t_import = time.perf_counter()
    net = OFAMobileNetV3(ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4],
                         width_mult=1.0)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu")["state_dict"])
    with open(arch_file, encoding="utf-8") as f:
        arch = json.load(f)
    t_load = time.perf_counter()
    net.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
    sub = net.get_active_subnet(preserve_weight=True).eval()
    t_subnet = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(sub, (torch.randn(1, 3, 224, 224),), out, dynamo=exporter == "dynamo")
    end = time.perf_counter()
    return {"import": t_import - START, "load": t_load - t_import, "subnet": t_subnet - t_load,
            "export": end - t_subnet}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
