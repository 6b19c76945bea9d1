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
