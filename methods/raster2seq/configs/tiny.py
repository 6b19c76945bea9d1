# Toy Raster2Seq for tests and the CPU demo: random-init toy ResNet on 128x128 crops, small decoder.
_base_ = ["./raster2seq.py"]

input_size = 128
backbone = "tiny_cnn"

model = dict(
    d_model=64,
    nhead=4,
    num_decoder_layers=2,
    num_support_layers=2,
    dim_feedforward=128,
    num_bins=64,
)

# The demo checkpoint trains a third longer than the shared budget, 8 epochs (1,400 iterations,
# x0.1 after epoch 7) instead of 6: on the first demo dataset (version 1), at the shared budget
# tiny raster2seq scored 63.56 PCK@0.2 on split 5 against support-copy's 63.79 while its loss
# was still falling.
demo_budget = dict(max_iters=1400, milestones=[7])
