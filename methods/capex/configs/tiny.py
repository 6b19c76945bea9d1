# Toy CapeX for tests and the CPU demo: random-init toy ResNet, the packaged all-MiniLM-L6-v2 text
# encoder (384-d, offline) and a small head.
_base_ = ["./capex.py"]

backbone = "tiny_cnn"
text_encoder = "minilm"

head = {{_base_.tiny_head}}
input_size = {{_base_.tiny_input_size}}
heatmap = {{_base_.tiny_heatmap}}
