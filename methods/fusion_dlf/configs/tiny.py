# Toy Method-DLF for tests and the CPU demo: random-init toy ResNet (64 channels), the packaged
# all-MiniLM-L6-v2 text encoder (384-d, as CapeX tiny) and small heads for both paths.
_base_ = ["./fusion_dlf.py"]

backbone = "tiny_cnn"
text_encoder = "minilm"

head = {{_base_.tiny_head}}
input_size = {{_base_.tiny_input_size}}
heatmap = {{_base_.tiny_heatmap}}
