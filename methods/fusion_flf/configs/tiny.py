# Toy Method-FLF for tests and the CPU demo: random-init toy ResNet (64 channels), the weight-free
# `hash` text encoder at 64-d (the shared text_proj needs equal widths, as SwinV2-S/gte-base at full
# size) and a small head.
_base_ = ["./fusion_flf.py"]

backbone = "tiny_cnn"
text_encoder = "hash"
text_encoder_options = dict(dim=64)

head = {{_base_.tiny_head}}
input_size = {{_base_.tiny_input_size}}
heatmap = {{_base_.tiny_heatmap}}
