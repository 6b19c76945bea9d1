# Toy GraphCape for tests and the CPU demo: random-init toy SwinV2 (192 channels) and a small head.
_base_ = ["./graphcape_s.py"]

backbone = "tiny"
backbone_options = dict(drop_path=0.0)

head = dict(
    d_model=64,
    nhead=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dim_feedforward=128,
    similarity_proj_dim=64,
    dynamic_proj_dim=32,
)
