# Raster2Seq for CAPE at the report's size (sections 5.1, 5.4, 5.6): 512x512 query crops, ResNet-50,
# a 3-layer pose-graph encoder and a 6-layer decoder, 8 heads, width 256. Coordinates are tokenised
# into 512 bins (one per input pixel, the report's integer coordinates 0..511).
input_size = 512

# cape_bench's ResNet-50 row: torchvision IMAGENET1K_V1 weights, the stride-16 layer3 map
# (1024 channels, 32x32 at 512 input); see README "Deviations".
backbone = "resnet50"
backbone_options = dict()
# resnet50-0676ba61.pth. None: looked up under $CAPE_BENCH_WEIGHTS; set it with
# --cfg-options backbone_weights=PATH.
backbone_weights = None
# True builds the backbone without pretrained weights (tests, profiling, training from scratch).
random_init = False

model = dict(
    d_model=256,
    nhead=8,
    num_decoder_layers=6,
    num_support_layers=3,
    dim_feedforward=1024,
    dropout=0.1,
    num_bins=512,
    # "standard": cross-attention to every map cell; "deformable": multi-scale deformable attention.
    image_attention="standard",
    deformable_levels=3,
    deformable_points=4,
)
# Report section 5.6: lambda_1 (token cross-entropy) and lambda_2 (coordinate L1), every decoder layer.
loss_weights = dict(token=1.0, coord=5.0)
# Greedy decoding with the self-attention KV cache; False re-runs the prefix at every step (timing).
kv_cache = True

# The report's preliminary run: Adam, lr 1e-4, batch 8.
train = dict(lr=1e-4, batch_size=8)
