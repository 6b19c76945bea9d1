# Toy GraphCape for tests and the CPU demo: random-init toy ResNet (64 channels) and a small head.
_base_ = ["./graphcape_s.py"]

backbone = "tiny_cnn"

head = {{_base_.tiny_head}}
input_size = {{_base_.tiny_input_size}}
heatmap = {{_base_.tiny_heatmap}}
