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

# The same head at toy size, for every method's `tiny` config (`head = {{_base_.tiny_head}}`,
# `input_size = {{_base_.tiny_input_size}}`, `heatmap = {{_base_.tiny_heatmap}}`): 128 px crops
# (an 8x8 feature map) and 32x32 heatmaps (stride 4, as 64 for 256), small enough to train and
# evaluate on two CPU cores.
tiny_input_size = 128
tiny_heatmap = dict(size=32, sigma=1.0)
tiny_head = dict(
    d_model=64,
    nhead=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dim_feedforward=128,
    similarity_proj_dim=64,
    dynamic_proj_dim=32,
    # Off for training from random init: the MSE between the raw similarity logits and the
    # 0..1 target heatmaps is smallest when every logit is ~0, which flattens the softmax and
    # parks every proposal at the map centre (measured: val PCK@0.2 stuck at ~12% on demo
    # split 1). Upstream starts from ImageNet-pretrained features, where it helps.
    heatmap_loss_weight=0.0,
)
