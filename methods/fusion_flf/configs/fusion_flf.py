# Method-FLF as published (Li & Liu, Table 3 hyperparameters): SwinV2-S backbone (depths 2-2-18-2,
# drop-path 0.3), frozen gte-base-en-v1.5, CapeX-S's head, plus CMAA. 195,715,113 parameters =
# CapeX-S (195,518,504, upstream counts.json `capex_s.total_params`) + 3 x 256 x 256 + 1 (fusion paper
# Table 5: 195.715 M); 136,776,192 of them are the frozen gte.
input_size = 256

backbone = "swinv2_small"
backbone_options = dict(drop_path=0.3)
# swinv2_small_patch4_window16_256.pth; None: looked up under $CAPE_BENCH_WEIGHTS; set it with
# --cfg-options backbone_weights=PATH.
backbone_weights = None

# Keypoint descriptions: gte-base-en-v1.5 (768-d, like the SwinV2-S features: one shared text_proj).
text_encoder = "gte-base"
# A local copy of Alibaba-NLP/gte-base-en-v1.5; None: $CAPE_BENCH_WEIGHTS/gte-base-en-v1.5;
# set it with --cfg-options text_encoder_path=DIR.
text_encoder_path = None
text_encoder_options = dict()
text_embeddings = None
text_encoder_id = None

# True builds the parts without given weights (backbone, gte) from scratch: tests, profiling.
random_init = False

fusion = dict(
    # "text_into_image": visual keypoint tokens are the residual and attend to the texts (eq. 3-4);
    # "image_into_text": the reverse (text dominant).
    direction="text_into_image",
    # gamma starts at 0: the module starts as LayerNorm(tokens) and training phases the fusion in.
    gamma_init=0.0,
)

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
