# support-copy has no weights and no dimensions; only the crop size matters.
input_size = 256
