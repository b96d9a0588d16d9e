"""The FastVLA model: config, ``PreTrainedModel``, processor, presets, quantisation and LoRA helpers.

Importing this package registers ``FastVLAConfig``/``FastVLAModel`` with ``AutoConfig``/``AutoModel``.
"""

from fastvla.model.checkpointing import decoder_layers, set_checkpointed_layers
from fastvla.model.configuration import ActionHeadConfig, FastVLAConfig, FusionConfig
from fastvla.model.lora import LoraSettings, add_lora, merge_and_save
from fastvla.model.modeling import (
    FastVLAModel,
    FastVLAOutput,
    attn_implementation_map,
    default_attn_implementation,
)
from fastvla.model.presets import PRESETS, Preset, get_preset, preset_config
from fastvla.model.processor import FastVLAProcessor
from fastvla.model.quantization import NON_QUANTIZED_MODULES, bnb_config, compute_dtype, guard_cpu_4bit

__all__ = [
    "NON_QUANTIZED_MODULES",
    "PRESETS",
    "ActionHeadConfig",
    "FastVLAConfig",
    "FastVLAModel",
    "FastVLAOutput",
    "FastVLAProcessor",
    "FusionConfig",
    "LoraSettings",
    "Preset",
    "add_lora",
    "attn_implementation_map",
    "bnb_config",
    "compute_dtype",
    "decoder_layers",
    "default_attn_implementation",
    "get_preset",
    "guard_cpu_4bit",
    "merge_and_save",
    "preset_config",
    "set_checkpointed_layers",
]
