"""Compression: quantised weights that replace `nn.Linear` layers in place, pruning, and GGUF export.

`QuantizedLinear` (linear.py) is the type every quantised layer shares, so LoRA, adapters and exporters
recognise one by `isinstance`. Round to nearest (rtn.py, layers.py) and NF4 (nf4.py) need no data;
GPTQ (gptq.py), AWQ (awq.py), SmoothQuant W8A8 (w8a8.py) and Wanda (prune.py) run the model on
calibration text first (calibration.py). `quantize_model` is the entry point for the data-free methods.
"""

from llmlab.quantize.awq import awq_quantize_model
from llmlab.quantize.calibration import calibration_batches, collect_model_stats
from llmlab.quantize.gguf_export import export_gguf
from llmlab.quantize.gptq import gptq_quantize_model
from llmlab.quantize.linear import QuantizedLinear, dequantize_model
from llmlab.quantize.model import model_size_bytes, quantize_model
from llmlab.quantize.nf4 import NF4Linear, quantize_model_nf4
from llmlab.quantize.prune import prune_magnitude, prune_n_m, prune_wanda, sparsity_report

__all__ = ["NF4Linear", "QuantizedLinear", "awq_quantize_model", "calibration_batches", "collect_model_stats",
           "dequantize_model", "export_gguf", "gptq_quantize_model", "model_size_bytes", "prune_magnitude",
           "prune_n_m", "prune_wanda", "quantize_model", "quantize_model_nf4", "sparsity_report"]
