"""Model-shape helpers read from a Hugging Face config or a loaded model: head width, KV
bytes per token, the weight bytes a decode step streams."""
from __future__ import annotations


def head_dim(config) -> int:
    """Width of one attention head, from a Hugging Face model config."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_bytes_per_token(config, dtype_bytes: int) -> int:
    """K and V bytes for one token across all layers, from a Hugging Face model config."""
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim(config) * dtype_bytes


def streamed_weight_bytes(model) -> int:
    """Weight bytes a decode step reads: all weights, less an untied input-embedding table
    (a lookup reads one row per sequence; a tied table is read whole by the LM head)."""
    from engine.core.memory import model_weight_bytes, tensor_bytes

    total = model_weight_bytes(model)
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb
    return total if tied else total - tensor_bytes(emb.data)
