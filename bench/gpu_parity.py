"""GPU parity and latency of one subnet: TF32 on/off error against float64, ORT CUDA vs torch eager.

Run by ci/gpu-check.sh on a lent GPU machine (needs CUDA and onnxruntime-gpu); results are
written as JSON to ``--out`` and copied into docs/parity.md by hand, never asserted in tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import subnet_export as se  # noqa: E402


class Space(nn.Module):
    """Conv stem + BN, a depthwise-separable block, a transformer block, classifier."""

    def __init__(self) -> None:
        super().__init__()
        w = se.Choice([32, 64], label="w")
        self.stem = se.Conv2d(3, w, se.Choice([3, 5], label="k"), padding=2, stride=2)
        self.bn = se.BatchNorm2d(w)
        self.dw = se.Conv2d(w, w, 3, padding=1, groups=w)
        self.pw = se.Conv2d(w, w, 1)
        self.norm = se.LayerNorm(w)
        self.attn = se.MultiheadAttention(w, se.Choice([2, 4], label="heads"), batch_first=True)
        self.fc1 = se.Linear(w, w * 2)
        self.fc2 = se.Linear(w * 2, w)
        self.head = se.Linear(w, 100)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        y = y + self.pw(torch.relu(self.dw(y)))
        t = y.flatten(2).transpose(1, 2)
        n = self.norm(t)
        t = t + self.attn(n, n, n, need_weights=False)[0]
        t = t + self.fc2(torch.relu(self.fc1(t)))
        return self.head(t.mean(1))


def _median_ms(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu_parity.json"))
    args = parser.parse_args()
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    torch.manual_seed(0)
    net = se.to_supernet(Space(), strategy="sampling").eval()
    arch = se.freeze(net, {"w": 64, "k": 5, "heads": 4})
    plain = se.materialize(net, arch).eval()
    x = torch.randn(32, 3, 32, 32)
    onnx_path = Path(tempfile.mkdtemp()) / "bench.onnx"
    se.export_onnx(plain, x[:2], onnx_path, arch=arch)
    oracle = copy.deepcopy(plain).double()(x.double()).detach().numpy()
    gpu = copy.deepcopy(plain).cuda()
    result: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "onnxruntime": ort.__version__, "arch": arch, "errors": {}, "latency_ms": {}}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        with torch.no_grad():
            t_out = gpu(x.cuda()).cpu().numpy()
        sess = ort.InferenceSession(str(onnx_path), providers=[
            ("CUDAExecutionProvider", {"use_tf32": int(tf32)})])
        o_out = sess.run(None, {"input": x.numpy()})[0]
        key = "tf32_on" if tf32 else "tf32_off"
        result["errors"][key] = {
            "torch_cuda_vs_float64": float(np.abs(t_out - oracle).max()),
            "ort_cuda_vs_float64": float(np.abs(o_out - oracle).max()),
        }
        for batch in (1, 32):
            xb = x[:batch].cuda()

            def torch_run() -> None:
                with torch.no_grad():
                    gpu(xb)
                torch.cuda.synchronize()

            binding = sess.io_binding()
            binding.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(
                x[:batch].numpy(), "cuda", 0))
            binding.bind_output("output", "cuda")
            result["latency_ms"][f"{key}_b{batch}"] = {
                "torch_eager": _median_ms(torch_run),
                "ort_cuda": _median_ms(lambda: sess.run_with_iobinding(binding)),
            }
    # the verdict itself on every backend, TF32 off (the default) and on
    result["verdicts"] = {}
    for tf32 in (False, True):
        report = se.validate(net, arch, plain, onnx_path, example_inputs=x[:2], locate=False,
                             tf32=tf32)
        result["verdicts"]["tf32_on" if tf32 else "tf32_off"] = {
            b.name: {"status": b.status, "tolerance": b.tolerance.describe(),
                     "error_over_noise": max((n.ratio for n in b.noise), default=None)}
            for b in report.backends}
        if not tf32:
            cpu = report
    result["validate_passed"] = cpu.passed
    result["validate_table"] = cpu.format_table()
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(json.dumps({k: v for k, v in result.items() if k != "validate_table"}, indent=2))
    print(cpu.format_table())
    return 0 if cpu.passed else 1


if __name__ == "__main__":
    sys.exit(main())
