# Toy Method-DLF for tests and the CPU demo: random-init toy SwinV2 (192 channels), the packaged
# all-MiniLM-L6-v2 text encoder (384-d, as CapeX tiny) and small heads for both paths.
_base_ = ["./fusion_dlf.py"]

backbone = "tiny"
backbone_options = dict(drop_path=0.0)
text_encoder = "minilm"

head = {{_base_.tiny_head}}
input_size = {{_base_.tiny_input_size}}
heatmap = {{_base_.tiny_heatmap}}
