# CapeX with CLIP ViT-B/32 text embeddings (512-d): the CapeX baseline of the CapeNext paper
# (CapeNext `configs/clip/`). 188,572,825 parameters (upstream counts.json `capex_clip.total_params`):
# the whole frozen CLIP (both towers, 151,277,313) and the unused backbone classifier included.
_base_ = ["./capex.py"]

text_encoder = "clip-vit-b32"
# OpenAI's ViT-B-32.pt; set it with --cfg-options text_encoder_path=PATH.
text_encoder_path = None
