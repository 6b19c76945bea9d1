# Toy GraphCape for tests and the CPU demo: random-init toy SwinV2 (192 channels) and a small head.
_base_ = ["./graphcape_s.py"]

backbone = "tiny"
backbone_options = dict(drop_path=0.0)

head = {{_base_.tiny_head}}
input_size = {{_base_.tiny_input_size}}
heatmap = {{_base_.tiny_heatmap}}
