# CapeX as in the paper: capex `configs/tiny/tiny_split*_config.py`, SwinV2-T backbone and the frozen
# gte-base-en-v1.5 text encoder (768-d). 174,137,240 parameters (upstream counts.json
# `capex.total_params`): the frozen gte (136,776,192) and the unused backbone classifier included.
_base_ = ["../../_configs/cape_head.py"]

input_size = 256

backbone = "swinv2_tiny"
backbone_options = dict(drop_path=0.2)
# swinv2_tiny_patch4_window16_256.pth (Microsoft SwinV2 release). None: looked up under
# $CAPE_BENCH_WEIGHTS; set it with --cfg-options backbone_weights=PATH.
backbone_weights = None

# Text encoder: a name of cape_bench.nn.text_encoders ("gte-base", "clip-vit-b32", "minilm",
# "sentence-transformers", "hash"), or None to use only the precomputed `text_embeddings`.
text_encoder = "gte-base"
# gte-base: a local copy of Alibaba-NLP/gte-base-en-v1.5 (config.json, model.safetensors, tokenizer
# files); clip-vit-b32: OpenAI's ViT-B-32.pt. None: looked up under $CAPE_BENCH_WEIGHTS
# (gte-base-en-v1.5/, ViT-B-32.pt); set it with --cfg-options text_encoder_path=PATH.
text_encoder_path = None
text_encoder_options = dict()
# Optional file written by EmbeddingCache.save: these rows are used instead of running the encoder.
text_embeddings = None
text_encoder_id = None  # which encoder id of `text_embeddings` to use when text_encoder is None

# True builds the parts without given weights (backbone, gte/CLIP) from scratch: tests, profiling.
random_init = False
