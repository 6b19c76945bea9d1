# Toy CapeFormer for tests and the CPU demo: GraphCape's tiny config without the GCN-FFN.
_base_ = ["../../graphcape/configs/tiny.py"]

head = dict(graph_ffn=False)
