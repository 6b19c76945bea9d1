# The CAPE head as published by GraphCape, CapeX and CapeNext (UPSTREAM_ARCH.md sections 4-5):
# d_model 256, 8 heads, 3 encoder + 3 graph-decoder layers, FFN 768, dropout 0.1, post-norm.
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
# Support pooling, the keypoint mask and the heatmap loss use 64x64 MSRA heatmaps, sigma 1.
heatmap = dict(size=64, sigma=1.0)
