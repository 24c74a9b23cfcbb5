"""Compression: quantised weights that replace `nn.Linear` layers in place.

`QuantizedLinear` (linear.py) is the type every quantised layer shares, so
LoRA, adapters and exporters recognise one by `isinstance`. NF4 with double
quantisation (nf4.py) is the 4-bit format QLoRA keeps its frozen base in.
"""

from llmlab.quantize.linear import QuantizedLinear, dequantize_model
from llmlab.quantize.nf4 import NF4Linear, quantize_model_nf4

__all__ = ["NF4Linear", "QuantizedLinear", "dequantize_model", "quantize_model_nf4"]
