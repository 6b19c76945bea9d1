# The CapeFormer baseline of Pose Anything, `configs/1shot-swin/base_split*_config.py`: GraphCape-S
# (SwinV2-S, the same head sizes) with a plain Linear `ffn1` in the decoder instead of the GCN layer.
_base_ = ["../../graphcape/configs/graphcape_s.py"]

head = dict(graph_ffn=False)
