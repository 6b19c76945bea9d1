# GraphCape as published: PoseAnything `configs/1shot-swin/graph_split*_config.py`, SwinV2-S backbone.
# 58,742,312 parameters (upstream counts.json `graphcape.total_params`, the unused 768->1000
# ImageNet classifier of the backbone included, as in the checkpoints).
input_size = 256

backbone = "swinv2_small"
backbone_options = dict(drop_path=0.3)
# swinv2_small_patch4_window16_256.pth (Microsoft SwinV2 release). None: looked up under
# $CAPE_BENCH_WEIGHTS; set it with --cfg-options backbone_weights=PATH.
backbone_weights = None
# True builds the parts without given weights from scratch (tests, profiling, training from scratch).
random_init = False

head = dict(
    d_model=256,
    nhead=8,
    num_encoder_layers=3,
    num_decoder_layers=3,
    dim_feedforward=768,
    dropout=0.1,
    similarity_proj_dim=256,
    dynamic_proj_dim=128,
    graph_ffn=True,
    heatmap_loss_weight=2.0,
)
# Support pooling and the heatmap loss use MSRA target heatmaps of the 256 crop: 64x64, sigma 1.
heatmap = dict(size=64, sigma=1.0)
