# Toy Method-FLF for tests and the CPU demo: random-init toy SwinV2 (192 channels), the weight-free
# `hash` text encoder at 192-d (the shared text_proj needs equal widths, as SwinV2-S/gte-base at full
# size) and a small head.
_base_ = ["./fusion_flf.py"]

backbone = "tiny"
backbone_options = dict(drop_path=0.0)
text_encoder = "hash"
text_encoder_options = dict(dim=192)

head = {{_base_.tiny_head}}
input_size = {{_base_.tiny_input_size}}
heatmap = {{_base_.tiny_heatmap}}
