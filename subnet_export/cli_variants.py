"""``subnet-export onnx``'s edge-variant options (docs/edge.md), read into ``VariantOptions``.

torch-free: the options are declared on import of the CLI; the library is imported when read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["variant_config", "variant_options"]


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def variant_options(f):
    """The ``--variants`` family of options, passed on as keyword arguments."""
    for option in reversed([
        click.option("--variants", "variant_kinds", default=None, metavar="fp16,int8",
                     help="Edge variants to add to the bundle, judged by statistical parity "
                          "(cosine, SNR, top-1/top-5 agreement) against the supernet path."),
        click.option("--variant-limit", "variant_limits", multiple=True,
                     metavar="KIND.KEY=VALUE",
                     help="Override a verdict bound, e.g. int8.top1_agreement_min=0.99 "
                          "(none drops it); repeatable. Defaults in docs/edge.md."),
        click.option("--fp16-keep", default=None, metavar="OPS",
                     help="Op types the FP16 variant keeps float32, e.g. Softmax,ReduceMean."),
        click.option("--fp16-exclude", default=None, metavar="MODULES",
                     help="Modules (locate's names) the FP16 variant keeps float32."),
        click.option("--int8-exclude", default=None, metavar="MODULES",
                     help="Modules (locate's names, e.g. blocks.0.dw) kept float32 in INT8."),
        click.option("--auto-exclude", type=click.IntRange(min=0), default=0,
                     show_default=True, metavar="N",
                     help="Keep up to N of a failing variant's most sensitive modules float32, "
                          "one at a time, until its verdict passes."),
        click.option("--int8-calibration", type=click.Choice(["minmax", "entropy",
                                                               "percentile"]),
                     default="minmax", show_default=True,
                     help="onnxruntime's calibration method (static INT8)."),
        click.option("--int8-dynamic", is_flag=True,
                     help="Dynamic quantization of MatMul/Gemm weights (transformers) instead "
                          "of static QDQ."),
        click.option("--int8-full-range", is_flag=True,
                     help="8-bit weights instead of 7-bit (faster on VNNI/ARM; saturates on "
                          "AVX2-only x86, see docs/edge.md)."),
        click.option("--sensitivity", type=click.Choice(["auto", "always", "never"]),
                     default="auto", show_default=True,
                     help="Per-layer sensitivity: auto runs it for a variant that fails or is "
                          "within 6 dB of its SNR bound."),
        click.option("--ort-format", is_flag=True,
                     help="Add .ort files and required_operators.config for onnxruntime's "
                          "minimal build."),
    ]):
        f = option(f)
    return f


def variant_config(variant_kinds: str | None, variant_limits: Sequence[str],
                   fp16_keep: str | None, fp16_exclude: str | None, int8_exclude: str | None,
                   auto_exclude: int, int8_calibration: str, int8_dynamic: bool,
                   int8_full_range: bool, sensitivity: str, ort_format: bool,
                   calib_batch: int = 32) -> Any:
    """The run's ``VariantOptions``, or None when neither variants nor ORT files are asked for.

    Raises:
        InputError: an unknown kind, a bad ``--variant-limit``, or a variant option without
            ``--variants``.
    """
    from .errors import InputError
    from .variants.build import VariantOptions
    from .variants.convert import Fp16Settings, Int8Settings
    from .variants.stats import parse_limits

    kinds = _names(variant_kinds)
    if not kinds and not ort_format:
        given = [flag for flag, value in (
            ("--variant-limit", variant_limits), ("--fp16-keep", fp16_keep),
            ("--fp16-exclude", fp16_exclude), ("--int8-exclude", int8_exclude),
            ("--auto-exclude", auto_exclude), ("--int8-dynamic", int8_dynamic),
            ("--int8-full-range", int8_full_range)) if value]
        if given:
            raise InputError(f"{', '.join(given)} shape the edge variants: add --variants "
                             "fp16,int8 (or the kinds you want)")
        return None
    known = [k for k in kinds if k in ("fp16", "int8")]
    return VariantOptions(
        kinds=kinds,
        limits=parse_limits(variant_limits, known),
        fp16=Fp16Settings(keep_ops=_names(fp16_keep), exclude=_names(fp16_exclude)),
        int8=Int8Settings(reduce_range=not int8_full_range, dynamic=int8_dynamic,
                          calibration=int8_calibration, exclude=_names(int8_exclude)),
        auto_exclude=auto_exclude, sensitivity=sensitivity, ort_format=ort_format,
        batch=calib_batch)
